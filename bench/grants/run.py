"""Grant propagation: a job reassigned in tasking, to the new holder's grant usable in the four
services that keep grants (entity, PND, comms, safeguarding).

The path measured is the one the services run. Tasking's handler commits the job and its
JobReassigned (v2) to the outbox in one transaction. The outbox relay publishes it to JetStream.
Four grant consumers, each on its own database as each service has, store the job's new access.
Each consumer is built as a service builds it: `toex_common.grants.subscribe` on a MessageBus,
then IdempotentConsumer with SqlAlchemyUnitOfWork. "Usable" means each database's policy read
(`uow.grants.of_job`) names the new holder; the figure per job is the slowest of the four.

The baseline, measured in the same run for the same events, is the delivery floor. It is the time
from the same commit to a plain JetStream subscriber receiving the event: no inbox, no database
write.

Goal (issue 14): JobReassigned committed to usable in all four services, p99 under 1 s.

    python -m bench.grants.run [--quick] [--jobs N]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.db import create_engine, platform_metadata, session_factory
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.nats import connect
from toex_common.events.outbox import OutboxRelay
from toex_common.events.streams import TASKING_STREAM, ensure_stream
from toex_common.grants import grants_metadata, subscribe
from toex_common.migrations import upgrade
from toex_common.uow import SqlAlchemyUnitOfWork
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region
from toex_tasking.__main__ import migrations_dir
from toex_tasking.adapters.uow import PgTaskingUnitOfWork
from toex_tasking.demo import demo_directory
from toex_tasking.domain import commands
from toex_tasking.domain.model import Handling, JobType, Priority
from toex_tasking.service_layer import handlers

from bench.common import LoadResult, machine, write_results

SERVICES = ("entity", "pnd", "comms", "safeguarding")
COORDINATOR = Principal(
    "bench:nc", "national.coordinator", Region.NATIONAL, frozenset({Role.NATIONAL_COORDINATOR})
)
POLL_SECONDS = 0.003


async def holders(engine: Any, job: str) -> list[str]:
    async with engine.connect() as conn:
        found = (
            await conn.execute(text("SELECT holders FROM job_grants WHERE job = :job"), {"job": job})
        ).first()
    return list(found[0]) if found else []


async def usable(engine: Any, job: str, holder: str, started: float, limit: float = 10.0) -> float:
    while holder not in await holders(engine, job):
        if time.perf_counter() - started > limit:
            raise TimeoutError(f"{job} never reached {holder}")
        await asyncio.sleep(POLL_SECONDS)
    return time.perf_counter() - started


async def run(jobs: int, work: Path) -> tuple[LoadResult, LoadResult]:
    pg = Postgres(data_dir=work / "pg")
    nats = NatsServer(store_dir=work / "nats")
    pg.start()
    nats.start()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[Any]] = []
    nc: Any = None
    engines: dict[str, Any] = {}
    try:
        tasking_db = pg.create_database(f"bench_grants_tasking_{uuid.uuid4().hex[:6]}")
        await asyncio.to_thread(upgrade, tasking_db, migrations_dir())
        tasking_engine = create_engine(tasking_db, pool_size=5)
        nc = await connect(nats.url, "bench-grants")
        js = nc.jetstream()
        await ensure_stream(js, TASKING_STREAM)
        deps = handlers.Deps(
            uow=lambda: PgTaskingUnitOfWork(tasking_engine),  # type: ignore[arg-type,return-value]
            directory=demo_directory(),
        )
        engines["tasking"] = tasking_engine
        for service in SERVICES:
            engine = create_engine(
                pg.create_database(f"bench_grants_{service}_{uuid.uuid4().hex[:6]}"), pool_size=5
            )
            async with engine.begin() as conn:
                await conn.run_sync(platform_metadata.create_all)
                await conn.run_sync(grants_metadata.create_all)
            engines[service] = engine
            bus = MessageBus()
            subscribe(bus, f"bench-{service}")
            sessions = session_factory(engine)
            [consumer] = bus.consumers(
                lambda **config: IdempotentConsumer(nc=nc, js=js, **config),
                lambda sessions=sessions: SqlAlchemyUnitOfWork(sessions),  # type: ignore[misc]
            )
            tasks.append(asyncio.create_task(consumer.run(stop)))
        tasks.append(asyncio.create_task(OutboxRelay(tasking_engine, js).run(stop)))

        delivered: dict[str, float] = {}

        async def on_reassigned(msg: Any) -> None:
            delivered[tasking_events.JobReassigned.FromString(msg.data).job] = time.perf_counter()
            await msg.ack()

        await js.subscribe("toex.emsou.tasking.JobReassigned", cb=on_reassigned, ordered_consumer=True)

        names = []
        due = datetime.now(UTC) + timedelta(days=7)
        for _ in range(jobs):
            job = await handlers.create_job(
                commands.CreateJob(
                    actor=COORDINATOR,
                    region=Region.EMSOU,
                    requesting_unit="Op BENCH",
                    requesting_officer="DI Bench",
                    operation_name="Op BENCH",
                    job_type=JobType.COMMS_ANALYSIS,
                    priority=Priority.ROUTINE,
                    due_at=due,
                    description="grant propagation",
                    handling=Handling.C,
                ),
                deps,
            )
            await handlers.assign_job(
                commands.AssignJob(COORDINATOR, Region.EMSOU, job.id, ["researcher.emsou"]), deps
            )
            names.append(job)
        # Every grant to the first holder in place before the clock starts.
        services = [engines[s] for s in SERVICES]
        for job in names:
            for engine in services:
                await usable(engine, job.name, "researcher.emsou", time.perf_counter(), limit=60)

        floor, grants = [], []
        started_all = time.perf_counter()
        for job in names:
            await handlers.reassign_job(
                commands.ReassignJob(
                    COORDINATOR, Region.EMSOU, job.id, "researcher.london", "tasking resilience"
                ),
                deps,
            )
            committed = time.perf_counter()
            seconds = await asyncio.gather(
                *(usable(engine, job.name, "researcher.london", committed) for engine in services)
            )
            grants.append(max(seconds) * 1000)
            while job.name not in delivered:
                await asyncio.sleep(POLL_SECONDS)
            floor.append((delivered[job.name] - committed) * 1000)
        elapsed = time.perf_counter() - started_all
        return (
            LoadResult(len(floor), 0, elapsed, floor),
            LoadResult(len(grants), 0, elapsed, grants),
        )
    finally:
        stop.set()
        for task in tasks:
            try:
                await asyncio.wait_for(task, 10)
            except Exception:  # shutting down: whatever it was doing is over
                task.cancel()
        if nc is not None:
            await nc.close()
        for engine in engines.values():
            await engine.dispose()
        nats.stop()
        pg.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 jobs instead of 300")
    parser.add_argument("--jobs", type=int, default=0)
    args = parser.parse_args()
    jobs = args.jobs or (50 if args.quick else 300)
    work = Path(tempfile.mkdtemp(prefix="toex-bench-grants-"))
    work.chmod(0o755)  # PostgreSQL, run as its own user when started by root, must reach it
    try:
        floor, grants = asyncio.run(run(jobs, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    verdict = "met" if grants.pct(99) < 1000 else "NOT met"
    lines = [
        "# Grant propagation (bench/grants)",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}.",
        f"Each of {jobs} EMSOU jobs, assigned to researcher.emsou, is reassigned to researcher.london",
        "through tasking's handler, one at a time. The clock starts when the handler's transaction",
        "commits. Usable means the new holder is in the grant read model of all four services, each",
        "with its own database and its own consumer as the services build them. The floor, measured",
        "for the same events in the same run, is a plain JetStream subscriber receiving the event.",
        "",
        "| path | p50 ms | p90 ms | p99 ms | max ms | ratio p50 to the floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| commit -> relay -> JetStream subscriber (floor) | {floor.p50:.1f} | {floor.pct(90):.1f} | "
        f"{floor.pct(99):.1f} | {max(floor.latencies_ms):.1f} | 1.00 |",
        f"| commit -> usable in all four services | {grants.p50:.1f} | {grants.pct(90):.1f} | "
        f"{grants.pct(99):.1f} | {max(grants.latencies_ms):.1f} | {grants.p50 / floor.p50:.2f} |",
        "",
        f"Goal, p99 under 1 s: {verdict} ({grants.pct(99):.0f} ms).",
        "",
    ]
    path = write_results("grants", "\n".join(lines))
    print("\n".join(lines))
    print(f"written to {path}")


if __name__ == "__main__":
    main()
