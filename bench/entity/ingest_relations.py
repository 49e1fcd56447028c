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
import statistics
import tempfile
import uuid
from pathlib import Path
from typing import Any

from toex_common.migrations import upgrade
from toex_devstack.postgres import Postgres
from toex_entity import synthetic
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters import splink_model
from toex_entity.domain import matching
from toex_entity.service_layer import resolver

from bench.common import machine, write_results
from bench.entity.run import pct, service_run


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
    results: dict[str, list[tuple[float, float, float]]] = {"A": [], "B": []}
    work = Path(tempfile.mkdtemp(prefix="toex-bench-relations-"))
    work.chmod(0o755)
    pg = Postgres(data_dir=work / "pg")
    pg.start()
    try:
        for round_ in range(args.rounds):
            for arm in ("A", "B"):
                resolver.relations_from_records = real if arm == "A" else _none  # type: ignore[assignment]
                database = pg.create_database(f"bench_rel_{uuid.uuid4().hex[:8]}")
                await asyncio.to_thread(upgrade, database, migrations_dir())
                seconds, latencies, _, _ = await service_run(database, model, base, queries)
                results[arm].append((n / seconds, pct(latencies, 50), pct(latencies, 99)))
                print(
                    f"round {round_ + 1} {arm}: {n / seconds:,.0f} records/s, p99 {pct(latencies, 99):.1f} ms"
                )
    finally:
        resolver.relations_from_records = real  # type: ignore[assignment]
        pg.stop()

    def median(arm: str, i: int) -> float:
        return statistics.median(r[i] for r in results[arm])

    lines = [
        "# Relations from ingested records: cost to resolution (issue 18.4)",
        "",
        f"Run: `python -m bench.entity.ingest_relations --records {n} --queries {q} --rounds {args.rounds}` "
        f"on {machine()}. A: relations taken from each person record (every generated person has an "
        "address: one LIVES_AT relation and one RelationRecorded event per record); B: that step left "
        "out. Alternated A, B per round on fresh databases of one PostgreSQL; the machine was shared "
        "with other work, so single runs are noisy: medians below, every run listed.",
        "",
        "| measure | A (relations) | B (without) | A/B |",
        "| --- | --- | --- | --- |",
        f"| bulk ingest, records/s | {median('A', 0):,.0f} | {median('B', 0):,.0f} | "
        f"{median('A', 0) / median('B', 0):.2f} |",
        f"| incremental p50 ms | {median('A', 1):.1f} | {median('B', 1):.1f} | {median('A', 1) / median('B', 1):.2f} |",
        f"| incremental p99 ms | {median('A', 2):.1f} | {median('B', 2):.1f} | {median('A', 2) / median('B', 2):.2f} |",
        "",
        "Runs (records/s, p50 ms, p99 ms):",
        "",
        *(
            f"- round {i + 1}: A {a[0]:,.0f} / {a[1]:.1f} / {a[2]:.1f}; B {b[0]:,.0f} / {b[1]:.1f} / {b[2]:.1f}"
            for i, (a, b) in enumerate(zip(results["A"], results["B"], strict=True))
        ),
        "",
    ]
    print(write_results("entity-ingest-relations", "\n".join(lines)))


if __name__ == "__main__":
    asyncio.run(main())
