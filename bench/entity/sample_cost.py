"""What keeping the person sample as records are written costs resolution (issue 18.1).

A/B in one process on one PostgreSQL: A resolves as the service does (each transaction's person
records offered to the sample, domain/sample.py), B with that step left out (the same handler
path otherwise), each on a fresh database, alternated A B A B... so that the shared machine's
noise falls on both. Per run: N records bulk-resolved (streams of 20,000), then Q more one at a
time; records/s and p50/p99 ms, and the ratios A/B. With fewer stored persons than the sample's
cap (200,000) every record enters the sample: the most it costs. At a million stored persons
one in five would.

    python -m bench.entity.sample_cost [--records N] [--queries Q] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from toex_entity import synthetic
from toex_entity.adapters import splink_model
from toex_entity.adapters.repository import SqlEntityRepository
from toex_entity.domain import matching

from bench.common import machine, write_results
from bench.entity.run import alternate_arms, arm_table


async def _not_kept(self: Any, person_ids: list[str]) -> None:
    return None


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results", default="entity-sample-cost", help="bench/results/<name>.md")
    args = parser.parse_args()
    n, q = args.records, args.queries
    people = list(synthetic.generate(n + q, seed=2026))
    base, queries = people[:n], people[n:]
    model = splink_model.train(
        [(g.record_id, matching.person_features(g.person)) for g in base[:100_000]], source="bench sample"
    )
    kept = SqlEntityRepository._keep_sample

    def keeping() -> None:
        SqlEntityRepository._keep_sample = kept  # type: ignore[method-assign]

    def left_out() -> None:
        SqlEntityRepository._keep_sample = _not_kept  # type: ignore[method-assign]

    try:
        runs = await alternate_arms(
            "sample", model, base, queries, args.rounds, {"A": keeping, "B": left_out}
        )
    finally:
        keeping()

    lines = [
        "# Keeping the person sample as records are written: cost to resolution (issue 18.1)",
        "",
        f"Run: `python -m bench.entity.sample_cost --records {n} --queries {q} --rounds {args.rounds}` on "
        f"{machine()}. A: the person sample kept in each resolution's transaction (fewer stored "
        "persons than the cap, so every record enters it: the most it costs); B: that step left out. "
        "Alternated A, B per round on fresh databases of one PostgreSQL; the machine is shared with "
        "other work, so single runs are noisy: medians below, every run listed.",
        "",
        *arm_table(runs, "sample kept", "without"),
    ]
    print(write_results(args.results, "\n".join(lines)))


if __name__ == "__main__":
    asyncio.run(main())
