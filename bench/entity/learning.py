"""Entity resolution that learns from its own data (issue 18, parts 1-3).

1. Held-out accuracy through the newcomer path: FEBRL data sets the service has not seen
   (febrl1: one source, deduplication; febrl4: two sources, linkage), resolved with the model
   shipped in the package (what `toex entity resolve-csv` does with default settings: no
   social security number, which the default column mapping does not read), then the
   learning worker's re-estimation (Splink in a separate process) and re-resolution until
   settled. Baseline in the same run: Splink alone on the same records (unsupervised
   estimation as the service does it, batch predict, clustering at the same threshold).
2. Re-estimation over N stored generated persons (sample cap 200,000), with resolution p99
   measured while it runs, against p99 with nothing running (alternating, same database).
3. Re-resolution under the new model: records scanned per second, merges made.
4. The cost of the address blocking keys added for part 3: bulk ingest rate with and without
   them, alternating A/B on fresh databases in the same run.

    python -m bench.entity.learning [--records N] [--queries Q]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import text
from toex_common.db import create_engine, session_factory
from toex_common.migrations import upgrade
from toex_devstack.postgres import Postgres
from toex_entity import febrl, synthetic
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters import splink_model
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.domain import commands, matching
from toex_entity.domain.records import Address, Grading, Handling, PersonData, RecordType
from toex_entity.service_layer import handlers, learning
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from bench.common import machine, write_results
from bench.entity.run import pct, splink_batch

ACTOR = Principal("bench", "bench", Region.NATIONAL, frozenset({Role.SERVICE}))
GRADING = Grading(2, "B", Handling.P)
CHUNK = 20_000


def person_from_csv_row(row: Any) -> PersonData:
    """A FEBRL row as the CLI's default column mapping reads it (no social security number)."""
    person = febrl.person_from_row(row)
    return PersonData(
        given_name=person.given_name,
        surname=person.surname,
        birth_date=person.birth_date,
        addresses=tuple(Address(a.lines, a.town, a.postcode) for a in person.addresses),
    )


def incoming(source: str, rec_id: str, person: PersonData) -> commands.IncomingRecord:
    return commands.IncomingRecord(Region.EMSOU, source, rec_id, RecordType.PERSON, GRADING, person)


def deps_for(database: str) -> tuple[Any, handlers.Deps]:
    engine = create_engine(database, pool_size=4)
    sessions = session_factory(engine)
    return engine, handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions))  # type: ignore[arg-type,return-value]


def estimator(database: str) -> learning.Estimator:
    """What the service's learning worker runs: Splink in a process of its own."""
    return lambda cap: splink_model.estimate_from_database(database, cap)


async def ingest(deps: handlers.Deps, records: list[commands.IncomingRecord]) -> float:
    started = time.perf_counter()
    for start in range(0, len(records), CHUNK):
        await handlers.resolve_records(
            commands.ResolveRecords(ACTOR, records[start : start + CHUNK], single=False), deps
        )
    return time.perf_counter() - started


async def clusters_of(engine: Any) -> dict[str, str]:
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT source_record_id, entity_id FROM source_records"))).all()
    return {r[0]: r[1] for r in rows}


async def settle(learner: learning.Learner) -> tuple[float, float, learning.LearningStatus]:
    started = time.perf_counter()
    await learner.reestimate()
    estimated = time.perf_counter() - started
    started = time.perf_counter()
    while not await learner.reresolve_step():
        pass
    return estimated, time.perf_counter() - started, await learner.status()


async def held_out(pg: Postgres, name: str) -> list[str]:
    frames, truth = febrl.load_frames(name)
    records = [
        incoming(f"{name}-{i}", str(rec_id), person_from_csv_row(row))
        for i, frame in enumerate(frames)
        for rec_id, row in frame.iterrows()
    ]
    database = pg.create_database(f"bench_learn_{name}_{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine, deps = deps_for(database)
    try:
        ingest_seconds = await ingest(deps, records)
        before = febrl.pairwise(await clusters_of(engine), truth)
        learner = learning.Learner(deps, estimator(database))
        estimated, reresolved, status = await settle(learner)
        after = febrl.pairwise(await clusters_of(engine), truth)
    finally:
        await engine.dispose()
    # Splink alone, unsupervised, on the same records.
    rows = [(r.source_record_id, matching.person_features(r.content)) for r in records]  # type: ignore[arg-type]
    started = time.perf_counter()
    model = splink_model.train(rows, source=name)
    _, clusters = splink_batch(model, rows)
    splink_seconds = time.perf_counter() - started
    theirs = febrl.pairwise(clusters, truth)
    return [
        f"| {name} ({len(records):,} records, {len(truth):,} true links) | "
        f"{before.precision:.4f} / {before.recall:.4f} / {before.f1:.4f} | "
        f"{after.precision:.4f} / {after.recall:.4f} / **{after.f1:.4f}** | "
        f"{theirs.precision:.4f} / {theirs.recall:.4f} / {theirs.f1:.4f} | "
        f"ingest {ingest_seconds:.1f} s, estimate {estimated:.1f} s, re-resolve {reresolved:.1f} s "
        f"({status.reresolve_merged} merges); Splink {splink_seconds:.1f} s |"
    ]


async def latencies(deps: handlers.Deps, queries: list[commands.IncomingRecord]) -> list[float]:
    out = []
    for record in queries:
        begun = time.perf_counter()
        await handlers.resolve_records(commands.ResolveRecords(ACTOR, [record], single=True), deps)
        out.append((time.perf_counter() - begun) * 1000)
    return out


async def while_running(
    deps: handlers.Deps, work: Callable[[], Any], queries: list[commands.IncomingRecord]
) -> tuple[list[float], float]:
    """Resolution latencies while `work` runs (fresh records; they repeat only if it outlasts them)."""
    task = asyncio.create_task(work())
    started = time.perf_counter()
    out: list[float] = []
    i = 0
    while not task.done():
        out.extend(await latencies(deps, [queries[i % len(queries)]]))
        i += 1
        await asyncio.sleep(0.005)  # about the pace of a busy service, not a flood
    await task
    return out, time.perf_counter() - started


async def at_scale(pg: Postgres, n: int, q: int) -> list[str]:
    # Fresh records for every timed resolution (a record sent again is only looked up).
    people = list(synthetic.generate(n + 2 * q + 40 * q, seed=2026))
    base = [incoming("bench", g.record_id, g.person) for g in people[:n]]
    queries = [incoming("bench", g.record_id, g.person) for g in people[n:]]
    database = pg.create_database(f"bench_learn_scale_{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine, deps = deps_for(database)
    lines: list[str] = []
    try:
        ingest_seconds = await ingest(deps, base)
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
        learner = learning.Learner(deps, estimator(database))
        # p99 with nothing running (two runs), then during re-estimation.
        quiet_1 = await latencies(deps, queries[:q])
        quiet_2 = await latencies(deps, queries[q : 2 * q])
        during, estimate_seconds = await while_running(deps, learner.reestimate, queries[2 * q :])
        quiet = quiet_1 + quiet_2
        status = await learner.status()
        activated = status.reresolve_model != ""
        started = time.perf_counter()
        while not await learner.reresolve_step():
            pass
        reresolve_seconds = time.perf_counter() - started
        status = await learner.status()
        lines += [
            f"| re-estimation over {n:,} stored persons (sample cap 200,000, separate process, 1 DuckDB thread) "
            f"| {estimate_seconds:.0f} s | {'activated' if activated else 'rejected by its checks'} |",
            f"| resolution p50 / p99 ms, nothing running ({len(quiet)} records) "
            f"| {statistics.median(quiet):.1f} / {pct(quiet, 99):.1f} | baseline |",
            f"| resolution p50 / p99 ms, while re-estimating ({len(during)} records) "
            f"| {statistics.median(during):.1f} / {pct(during, 99):.1f} | p99 ratio **{pct(during, 99) / pct(quiet, 99):.2f}** (goal <= 1.2) |",
            f"| re-resolution of {status.reresolve_scanned:,} records under the new model "
            f"| {reresolve_seconds:.0f} s ({status.reresolve_scanned / reresolve_seconds:,.0f} records/s) "
            f"| {status.reresolve_merged:,} merges ({status.reresolve_merged / n:.2%} of the records) |",
            f"| bulk ingest of the {n:,} (with the address keys) | {n / ingest_seconds:,.0f} records/s | |",
        ]
    finally:
        await engine.dispose()
    return lines


async def key_cost(pg: Postgres, n: int, rounds: int) -> list[str]:
    """Bulk ingest with and without the address keys, alternating."""
    people = [incoming("bench", g.record_id, g.person) for g in synthetic.generate(n, seed=7)]
    original = matching._other_keys
    prefixes = learning.ADDRESS_KEY_PREFIXES

    def without(f: matching.Features) -> list[str]:
        return [k for k in original(f) if not k.startswith(prefixes)]

    rates: dict[str, list[float]] = {"with": [], "without": []}
    for _ in range(rounds):
        for variant in ("without", "with"):
            matching._other_keys = without if variant == "without" else original  # type: ignore[assignment]
            database = pg.create_database(f"bench_keys_{uuid.uuid4().hex[:6]}")
            await asyncio.to_thread(upgrade, database, migrations_dir())
            engine, deps = deps_for(database)
            try:
                seconds = await ingest(deps, people)
            finally:
                await engine.dispose()
                matching._other_keys = original  # type: ignore[assignment]
            rates[variant].append(n / seconds)
    w, wo = statistics.median(rates["with"]), statistics.median(rates["without"])
    return [
        f"| bulk ingest of {n:,} generated persons, median of {rounds} alternating runs each "
        f"| without address keys {wo:,.0f} records/s; with {w:,.0f} records/s | ratio **{w / wo:.2f}** "
        f"(runs: without {', '.join(f'{r:,.0f}' for r in rates['without'])}; with {', '.join(f'{r:,.0f}' for r in rates['with'])}) |"
    ]


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=100_000, help="stored persons for the scale figures")
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--key-records", type=int, default=50_000)
    parser.add_argument("--key-rounds", type=int, default=2)
    parser.add_argument("--scale-only", action="store_true", help="only the scale figures")
    parser.add_argument("--results", default="entity-learning", help="bench/results/<name>.md")
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="toex-bench-learning-"))
    work.chmod(0o755)
    pg = Postgres(data_dir=work / "pg", shared_buffers="1GB")
    pg.start()
    try:
        accuracy: list[str] = []
        keys: list[str] = []
        for name in () if args.scale_only else ("febrl1", "febrl4"):
            print(f"held-out accuracy: {name}", flush=True)
            accuracy += await held_out(pg, name)
        print(f"scale: {args.records:,} stored persons", flush=True)
        scale = await at_scale(pg, args.records, args.queries)
        if not args.scale_only:
            print("cost of the address keys", flush=True)
            keys = await key_cost(pg, args.key_records, args.key_rounds)
    finally:
        pg.stop()
    lines = [
        "# Entity resolution that learns (issue 18, parts 1-3)",
        "",
        f"Run: `python -m bench.entity.learning --records {args.records} --queries {args.queries} "
        f"--key-records {args.key_records} --key-rounds {args.key_rounds}"
        f"{' --scale-only' if args.scale_only else ''}` on {machine()}. The machine "
        "was shared with other work during the run: figures are noisy; ratios are taken "
        "within the run, alternating where stated.",
        "",
    ]
    if accuracy:
        lines += [
            "## Held-out accuracy through the newcomer path",
            "",
            "Records resolved with the shipped model as `resolve-csv` sends them (default mapping: no "
            "social security number), then the learning worker's re-estimation and re-resolution "
            "(what `--wait-settled` waits for). Splink: the same unsupervised estimation, batch predict "
            "and clustering at the same auto-link threshold, on the same records.",
            "",
            "| data | shipped model: P / R / F1 | after settling: P / R / F1 | Splink alone: P / R / F1 | time |",
            "| --- | --- | --- | --- | --- |",
            *accuracy,
            "",
        ]
    lines += [
        "## Scale",
        "",
        "| measure | figure | note |",
        "| --- | --- | --- |",
        *scale,
        *keys,
        "",
    ]
    path = write_results(args.results, "\n".join(lines))
    print("\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    asyncio.run(main())
