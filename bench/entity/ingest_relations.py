"""What taking relations from ingested person records costs resolution (issue 18.4).

Every generated person carries an address, so each ingested record now also stores a LIVES_AT
relation and publishes RelationRecorded. A/B in one process on one PostgreSQL: A resolves with
relations taken from the records, B with that step left out (the same handler path otherwise),
each on a fresh database, alternated A B A B... so that the shared machine's noise falls on
both. Per run: N records bulk-resolved (handlers.resolve_records, streams of 20,000), then Q
more one at a time; records/s and p50/p99 ms, and the ratios A/B.

    python -m bench.entity.ingest_relations [--records N] [--queries Q] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from toex_entity import synthetic
from toex_entity.adapters import splink_model
from toex_entity.domain import matching
from toex_entity.service_layer import resolver

from bench.common import machine, write_results
from bench.entity.run import alternate_arms, arm_table


async def _none(uow: Any, batch: Any) -> list[Any]:
    return []


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n, q = args.records, args.queries
    people = list(synthetic.generate(n + q, seed=2026))
    base, queries = people[:n], people[n:]
    rows = [(g.record_id, matching.person_features(g.person)) for g in base]
    model = splink_model.train(rows[: min(n, 100_000)], source="bench sample")
    real = resolver.relations_from_records

    def taken() -> None:
        resolver.relations_from_records = real  # type: ignore[assignment]

    def left_out() -> None:
        resolver.relations_from_records = _none  # type: ignore[assignment]

    try:
        runs = await alternate_arms("rel", model, base, queries, args.rounds, {"A": taken, "B": left_out})
    finally:
        taken()

    lines = [
        "# Relations from ingested records: cost to resolution (issue 18.4)",
        "",
        f"Run: `python -m bench.entity.ingest_relations --records {n} --queries {q} --rounds {args.rounds}` "
        f"on {machine()}. A: relations taken from each person record (every generated person has an "
        "address: one LIVES_AT relation and one RelationRecorded event per record); B: that step left "
        "out. Alternated A, B per round on fresh databases of one PostgreSQL; the machine was shared "
        "with other work, so single runs are noisy: medians below, every run listed.",
        "",
        *arm_table(runs, "relations", "without"),
    ]
    print(write_results("entity-ingest-relations", "\n".join(lines)))


if __name__ == "__main__":
    asyncio.run(main())
