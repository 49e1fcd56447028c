"""What keeping a grant costs a service: the CPU per event of `toex_common.grants.store_access`
(one prepared statement per event) and of `store_accesses` (a consumer's batch in one pipelined
statement, what the grants consumer's prefetch does), against the SQLAlchemy Core upsert built per
event that they replaced (kept here as the baseline), on a real PostgreSQL.

Every service whose material a job's assignees work (entity, PND, comms, safeguarding) stores the
job's access from most of tasking's events (JobCreated, JobAssigned, JobReassigned,
JobStatusChanged, JobUpdated): in the oversight benchmark's workload about three events in four.
A region catching up after a partition, or taking 1,000 events a second, pays it four times over
on the same cores as everything else.

Each round stores the access of `--jobs` jobs (new rows, then the same jobs again at a later
revision: the update path), in transactions of 100 events as the consumer's batches are, on the
session's connection (`SqlAlchemyUnitOfWork`), once with each of the three ways, alternating. Process CPU per
event is what the figure compares (the database's own work is the same statement either way).

    python -m bench.grants.keep [--jobs 4000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.db import create_engine, platform_metadata, session_factory
from toex_common.grants import (
    OPEN_STATES,
    grants_metadata,
    job_grants_table,
    store_access,
    store_accesses,
)
from toex_common.uow import SqlAlchemyUnitOfWork
from toex_devstack.postgres import Postgres
from toex_kernel.regions import Region

from bench.common import machine, write_results

BATCH = 100

Accesses = list[tuple[str, Region, tasking_events.JobAccess]]
Store = Callable[[AsyncSession, Accesses], Awaitable[None]]


def each(store: Callable[[AsyncSession, str, Region, tasking_events.JobAccess], Awaitable[None]]) -> Store:
    """A transaction's events stored one statement at a time, as a per-event handler does."""

    async def run(session: AsyncSession, accesses: Accesses) -> None:
        for job, region, message in accesses:
            await store(session, job, region, message)

    return run


async def core_upsert(
    session: AsyncSession, job: str, region: Region, access: tasking_events.JobAccess
) -> None:
    """The baseline: the same upsert built with SQLAlchemy Core for every event, as
    `store_access` did before it used a prepared statement."""
    row = {
        "job": job,
        "region": region.value,
        "open": access.state in OPEN_STATES,
        "holders": sorted({a.username for a in access.assignees if a.username}),
        "collaborators": sorted(
            {Region.from_proto(r).value for r in access.collaborating_regions if r} - {region.value}
        ),
        "revision": access.revision,
    }
    statement = pg_insert(job_grants_table).values(**row)
    statement = statement.on_conflict_do_update(
        index_elements=[job_grants_table.c.job],
        set_={
            "open": statement.excluded.open,
            "holders": statement.excluded.holders,
            "collaborators": statement.excluded.collaborators,
            "revision": statement.excluded.revision,
            "updated_at": func.now(),
        },
        where=job_grants_table.c.revision <= statement.excluded.revision,
    )
    await session.execute(statement)


def access(revision: int) -> tasking_events.JobAccess:
    return tasking_events.JobAccess(
        revision=revision,
        state=tasking_events.JOB_STATE_ASSIGNED,
        assignees=[tasking_events.Assignee(username="researcher.london")],
        collaborating_regions=[Region.ERSOU.to_proto()],  # type: ignore[list-item]
    )


async def one_round(sessions: Any, store: Store, jobs: int) -> tuple[float, float]:
    """CPU and wall microseconds per event: `jobs` new grants, then each again at a later revision."""
    names = [f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}" for _ in range(jobs)]
    cpu, wall = time.process_time(), time.perf_counter()
    for revision in (1, 2):
        message = access(revision)
        for i in range(0, jobs, BATCH):
            async with SqlAlchemyUnitOfWork(sessions) as uow:
                await store(uow.session, [(job, Region.EMSOU, message) for job in names[i : i + BATCH]])
                await uow.commit()
    events = 2 * jobs
    return (time.process_time() - cpu) / events * 1e6, (time.perf_counter() - wall) / events * 1e6


async def measure(jobs: int, rounds: int, work: Path) -> dict[str, list[tuple[float, float]]]:
    pg = Postgres(data_dir=work / "pg")
    pg.start()
    try:
        engine = create_engine(pg.create_database("bench_grants_keep"), pool_size=2)
        async with engine.begin() as conn:
            await conn.run_sync(platform_metadata.create_all)
            await conn.run_sync(grants_metadata.create_all)
        sessions = session_factory(engine)
        ways: dict[str, Store] = {
            "baseline": each(core_upsert),
            "store_access": each(store_access),
            "store_accesses": store_accesses,
        }
        for store in ways.values():  # warm every path's caches
            await one_round(sessions, store, min(jobs, 500))
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
        for _ in range(rounds):
            for name, store in ways.items():
                results[name].append(await one_round(sessions, store, jobs))
        await engine.dispose()
        return results
    finally:
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="toex-bench-grants-keep-"))
    work.chmod(0o755)  # PostgreSQL, run as its own user when started by root, must reach it
    try:
        results = asyncio.run(measure(args.jobs, args.rounds, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = statistics.median(cpu for cpu, _ in results["baseline"])
    new = statistics.median(cpu for cpu, _ in results["store_access"])
    batched = statistics.median(cpu for cpu, _ in results["store_accesses"])
    lines = [
        "# Keeping a grant: CPU per event (bench/grants/keep.py)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `python -m bench.grants.keep"
        f" --jobs {args.jobs} --rounds {args.rounds}`. Each round stores {args.jobs:,} jobs' access and"
        f" then the same jobs' at a later revision ({2 * args.jobs:,} events), {BATCH} events a"
        " transaction, on one PostgreSQL; the three ways alternate.",
        "",
        "| round | baseline: SQLAlchemy Core upsert built per event, CPU / wall us per event |"
        " store_access: prepared statement on the session's connection, one per event |"
        " store_accesses: the transaction's events in one pipelined statement |",
        "| ---: | ---: | ---: | ---: |",
        *(
            f"| {i + 1} | {b[0]:,.0f} / {b[1]:,.0f} | {s[0]:,.0f} / {s[1]:,.0f} | {m[0]:,.0f} / {m[1]:,.0f} |"
            for i, (b, s, m) in enumerate(
                zip(results["baseline"], results["store_access"], results["store_accesses"], strict=True)
            )
        ),
        "",
        f"Median CPU per event: baseline {base:,.0f} us; store_access {new:,.0f} us,"
        f" **{new / base:.2f}x** the baseline; store_accesses {batched:,.0f} us,"
        f" **{batched / base:.2f}x** the baseline.",
        "",
    ]
    path = write_results("grants-keep", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
