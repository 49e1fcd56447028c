"""Entity resolution that learns from its own data (issue 18, parts 1-3).

1. Held-out accuracy through the newcomer path: FEBRL data sets the service has not seen
   (febrl1: one source, deduplication; febrl4: two sources, linkage), resolved with the model
   shipped in the package (what `toex entity resolve-csv` does with default settings: no
   social security number, which the default column mapping does not read), then the
   learning worker's re-estimation (Splink in a separate process) and re-resolution until
   settled. Baseline in the same run: Splink alone on the same records (unsupervised
   estimation as the service does it, batch predict, clustering at the same threshold).
2. Re-estimation over N stored generated persons (the person sample, cap 200,000), with resolution p99
   measured while it runs, against p99 with nothing running: quiet windows and re-estimations
   alternate in one session on the same database (quiet, learn, quiet, learn, quiet).
3. Re-resolution under the new model: records scanned per second, merges made.
4. The cost of the address blocking keys added for part 3: bulk ingest rate with and without
   them, alternating A/B on fresh databases in the same run.

    python -m bench.entity.learning [--records N] [--rounds R] [--quiet-seconds S] [--scale-only]
        [--seed resolver|direct]

`--seed direct` stores the N persons for the scale figures by COPY (records with their features,
blocking keys and entities, as bench/entity/reresolve.py does, and the person sample as the
service keeps it) instead of through the resolver (an hour at 1,000,000 on the shared machine).
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import logging
import os
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
from toex_entity.domain import commands, matching, sample
from toex_entity.domain.records import Address, Grading, Handling, PersonData, RecordType
from toex_entity.service_layer import handlers, learning
from toex_entity.service_layer.foreground import Foreground
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from bench.common import machine, write_results
from bench.entity import reresolve
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


def estimator(database: str, foreground: Foreground | None = None) -> learning.Estimator:
    """What the service's learning worker runs: Splink in a process of its own (stopped while a
    resolution is in flight when given the service's `foreground`, as bootstrap does)."""
    return lambda cap: splink_model.estimate_from_database(database, cap, foreground=foreground)


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


async def seed_directly(database: str, n: int, cap: int = sample.DEFAULT_CAP) -> float:
    """The first `n` generated persons of the scale run stored by COPY (bench/entity/reresolve.py's
    records, keys and entities, no official identifiers), and the person sample the service
    would hold after storing them: a random key per record, the `cap` smallest kept, the largest
    of those as the threshold once not every record fits (domain/sample.py). Seconds taken."""
    started = time.perf_counter()
    records, keys, entities = reresolve.generate(n, share=0.0)
    await reresolve.seed(database, records, keys, entities)
    features_at = reresolve.RECORD_COLUMNS.index("features")
    drawn = zip(sample.draw_keys(len(records)), records, strict=True)
    kept = heapq.nsmallest(cap, drawn, key=lambda pair: pair[0])
    del records, keys, entities
    threshold = kept[-1][0] if n > cap else 1.0
    engine = create_engine(database, pool_size=1)
    try:
        async with engine.begin() as connection:
            raw: Any = (await connection.get_raw_connection()).driver_connection
            await raw.copy_records_to_table(
                "person_sample",
                records=[(row[0], key, row[features_at]) for key, row in kept],
                columns=["record_id", "sample_key", "features"],
            )
            await raw.execute(
                "UPDATE person_sample_state SET threshold = $1, size = $2 WHERE name = 'persons'",
                threshold,
                len(kept),
            )
        async with engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            await raw.execute("VACUUM ANALYZE person_sample")
    finally:
        await engine.dispose()
    return time.perf_counter() - started


async def latencies(deps: handlers.Deps, queries: list[commands.IncomingRecord]) -> list[float]:
    out = []
    for record in queries:
        begun = time.perf_counter()
        await handlers.resolve_records(commands.ResolveRecords(ACTOR, [record], single=True), deps)
        out.append((time.perf_counter() - begun) * 1000)
    return out


async def paced(
    deps: handlers.Deps, queries: list[commands.IncomingRecord], start: int, done: Callable[[], bool]
) -> list[float]:
    """Resolution latencies, one record at a time at the pace of a busy service (not a flood),
    until `done()`; fresh records from `start` (they repeat only if the window outlasts them)."""
    out: list[float] = []
    i = start
    while not done():
        out.extend(await latencies(deps, [queries[i % len(queries)]]))
        i += 1
        await asyncio.sleep(0.005)
    return out


async def while_running(
    deps: handlers.Deps, work: Callable[[], Any], queries: list[commands.IncomingRecord], start: int
) -> tuple[list[float], float]:
    """Resolution latencies while `work` runs."""
    task = asyncio.create_task(work())
    started = time.perf_counter()
    out = await paced(deps, queries, start, task.done)
    await task
    return out, time.perf_counter() - started


async def quiet_for(
    deps: handlers.Deps, seconds: float, queries: list[commands.IncomingRecord], start: int
) -> list[float]:
    """Resolution latencies with nothing else running, for `seconds`."""
    until = time.perf_counter() + seconds
    return await paced(deps, queries, start, lambda: time.perf_counter() >= until)


async def at_scale(
    pg: Postgres,
    n: int,
    rounds: int,
    quiet_seconds: float,
    with_reresolve: bool,
    modes: list[str],
    seed: str = "resolver",
) -> list[str]:
    # Fresh records for every timed resolution (a record sent again is only looked up).
    pool = 8_000 * rounds * 2
    people = list(synthetic.generate(n + pool, seed=2026))
    base = [incoming("bench", g.record_id, g.person) for g in people[:n]] if seed == "resolver" else []
    queries = [incoming("bench", g.record_id, g.person) for g in people[n:]]
    del people
    database = pg.create_database(f"bench_learn_scale_{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine, deps = deps_for(database)
    lines: list[str] = []
    try:
        if seed == "direct":
            seed_seconds = await seed_directly(database, n)
        else:
            ingest_seconds = await ingest(deps, base)
        del base
        async with engine.begin() as conn:
            await conn.execute(text("ANALYZE"))
        # A/B in one session: a window with nothing running, then a re-estimation, alternately,
        # so that whatever else the machine does falls on both. The re-estimations take the modes
        # in turn: "yield" (as the service runs it: idle priority, and stopped while a resolution
        # is in flight, for at most half of any second) and "idle" (idle priority alone).
        learners = {
            "yield": learning.Learner(deps, estimator(database, deps.foreground)),
            "idle": learning.Learner(deps, estimator(database)),
        }
        quiet: list[list[float]] = []
        during: list[list[float]] = []
        round_modes: list[str] = []
        estimates: list[float] = []
        outcomes: list[str] = []
        used = 0
        await latencies(deps, queries[:50])  # warm the caches and the connection pool
        used = 50
        for r in range(rounds):
            mode = modes[r % len(modes)]
            learner = learners[mode]
            round_modes.append(mode)
            q = await quiet_for(deps, quiet_seconds, queries, used)
            used += len(q)
            quiet.append(q)
            before = (await learner.status()).active_model
            d, seconds = await while_running(deps, learner.reestimate, queries, used)
            used += len(d)
            during.append(d)
            estimates.append(seconds)
            after = await learner.status()
            outcomes.append(
                "activated"
                if after.active_model != before
                else f"not activated ({after.last_rejected or 'superseded'})"
            )
        q = await quiet_for(deps, quiet_seconds, queries, used)
        quiet.append(q)
        learner = learners[round_modes[-1]]
        all_quiet = [x for w in quiet for x in w]
        windows = (
            "; ".join(
                f"quiet {pct(a, 99):.1f}, learning ({m}) {pct(b, 99):.1f}"
                for a, b, m in zip(quiet, during, round_modes, strict=False)
            )
            + f"; quiet {pct(quiet[-1], 99):.1f}"
        )
        lines += [
            f"| resolution p50 / p99 ms, nothing running ({len(all_quiet)} records, {rounds + 1} windows of "
            f"{quiet_seconds:.0f} s) | {statistics.median(all_quiet):.1f} / {pct(all_quiet, 99):.1f} | baseline |",
        ]
        labels = {
            "yield": "idle priority, stopped while a resolution is in flight, for at most half of any second "
            "(the service's way)",
            "idle": "idle priority alone",
        }
        for mode in dict.fromkeys(round_modes):
            mine = [i for i, m in enumerate(round_modes) if m == mode]
            took = [estimates[i] for i in mine]
            lat = [x for i in mine for x in during[i]]
            ratio = pct(lat, 99) / pct(all_quiet, 99)
            lines += [
                f"| re-estimation over {n:,} stored persons, {labels[mode]} (the person sample, cap 200,000, separate "
                f"process, 1 DuckDB thread, 1 GB DuckDB memory limit), {len(mine)} runs "
                f"| {', '.join(f'{x:.0f} s' for x in took)} | {'; '.join(outcomes[i] for i in mine)} |",
                f"| resolution p50 / p99 ms while re-estimating, {labels[mode]} ({len(lat)} records) "
                f"| {statistics.median(lat):.1f} / {pct(lat, 99):.1f} | p99 ratio **{ratio:.2f}** (goal <= 1.2) |",
            ]
        lines.append(f"| p99 ms per window, in the order run | {windows} | |")
        if seed == "direct":
            lines.append(
                f"| the {n:,} stored by COPY (`--seed direct`: records, keys, entities, person sample) "
                f"| {seed_seconds:.0f} s | not the resolver's rate |"
            )
        else:
            lines.append(
                f"| bulk ingest of the {n:,} (with the address keys) | {n / ingest_seconds:,.0f} records/s | |"
            )
        if with_reresolve:
            started = time.perf_counter()
            while not await learner.reresolve_step():
                pass
            reresolve_seconds = time.perf_counter() - started
            status = await learner.status()
            lines.append(
                f"| re-resolution of {status.reresolve_scanned:,} records under the new model "
                f"| {reresolve_seconds:.0f} s ({status.reresolve_scanned / reresolve_seconds:,.0f} records/s) "
                f"| {status.reresolve_merged:,} merges ({status.reresolve_merged / n:.2%} of the records) |"
            )
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
    parser.add_argument(
        "--rounds", type=int, default=2, help="re-estimations, each between two quiet windows"
    )
    parser.add_argument("--quiet-seconds", type=float, default=30.0, help="length of each quiet window")
    parser.add_argument("--skip-reresolve", action="store_true", help="leave out the re-resolution figure")
    parser.add_argument("--key-records", type=int, default=50_000)
    parser.add_argument("--key-rounds", type=int, default=2)
    parser.add_argument("--scale-only", action="store_true", help="only the scale figures")
    parser.add_argument("--results", default="entity-learning", help="bench/results/<name>.md")
    parser.add_argument(
        "--seed",
        choices=("resolver", "direct"),
        default="resolver",
        help="how the scale run's persons are stored: through the resolver, or by COPY (direct)",
    )
    parser.add_argument(
        "--modes",
        default="yield,idle",
        help="the re-estimations' modes, taken in turn: yield (the service's: stopped while a resolution "
        "is in flight, for at most half of any second) and idle (idle priority alone)",
    )
    args = parser.parse_args()
    logging.getLogger("splink").setLevel(logging.WARNING)
    load_before = os.getloadavg()[0]
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
        scale = await at_scale(
            pg,
            args.records,
            args.rounds,
            args.quiet_seconds,
            not args.skip_reresolve,
            args.modes.split(","),
            args.seed,
        )
        if not args.scale_only:
            print("cost of the address keys", flush=True)
            keys = await key_cost(pg, args.key_records, args.key_rounds)
    finally:
        pg.stop()
    lines = [
        "# Entity resolution that learns (issue 18, parts 1-3)",
        "",
        f"Run: `python -m bench.entity.learning --records {args.records} --rounds {args.rounds} "
        f"--quiet-seconds {args.quiet_seconds:g} --key-records {args.key_records} --key-rounds {args.key_rounds}"
        f"{' --scale-only' if args.scale_only else ''}{' --skip-reresolve' if args.skip_reresolve else ''}"
        f" --modes {args.modes} --seed {args.seed}` on {machine()}; load average {load_before:.1f} at the start and "
        f"{os.getloadavg()[0]:.1f} at the end (other work may share the machine). Ratios are taken "
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
