"""Where the trigger consumer's time goes, on the trigger benchmark's workload (not a benchmark:
it prints, and writes no results file).

The same events as `run.py` (WatchlistContactDetected, each subject triggered four times) are
consumed by the safeguarding trigger consumer, and it reports:

- every statement the consumer sent, counted on the client (SQLAlchemy cursor events), per
  trigger, with the time the client waited for it;
- the server's execution time per statement (pg_stat_statements, loaded in the benchmark's own
  throwaway cluster);
- the CPU seconds of this process and of PostgreSQL's processes per trigger;
- with `--cprofile FILE`, a cProfile of the run (read it with `python -m pstats FILE`).

    python -m bench.safeguarding.profile_triggers [--events N] [--subjects M] [--cprofile FILE]

From the repository root it profiles the code of the working tree. To profile an earlier commit
with the same script, put that commit's source directories first on the path (from a worktree):

    PYTHONPATH=$(ls -d /tmp/old/libs/*/src /tmp/old/services/*/src /tmp/old/tools/*/src | paste -sd:) \\
        python -m bench.safeguarding.profile_triggers
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import re
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy import event, func, select, text
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import resources_pb2 as comms
from toex_common.db import create_engine, session_factory
from toex_common.events import build_event, ensure_stream
from toex_common.events.consumer import IdempotentConsumer, Outcome
from toex_common.events.nats import connect
from toex_common.events.streams import COMMS_STREAM
from toex_common.migrations import upgrade
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_kernel.regions import Region
from toex_safeguarding.__main__ import migrations_dir
from toex_safeguarding.adapters.tables import referrals
from toex_safeguarding.adapters.uow import SqlSafeguardingUnitOfWork
from toex_safeguarding.entrypoints import triggers

from bench.common import own_cpu_seconds, process_tree_cpu_seconds

# Spelled out rather than derived, so that the script runs against code older than the bus.
SUBJECTS = ["toex.*.comms.WatchlistContactDetected", "toex.*.comms.AdvertNumberFlagged"]


class StatementStatsPostgres(Postgres):
    """The benchmark's cluster, with pg_stat_statements loaded."""

    def _write_settings(self) -> None:
        super()._write_settings()
        with (self.pgdata / "toex.conf").open("a") as conf:
            conf.write("shared_preload_libraries = 'pg_stat_statements'\npg_stat_statements.track = all\n")


def contact(i: int, subjects: int, job: str) -> Any:
    message = comms_events.WatchlistContactDetected(
        dataset=f"regions/EMSOU/datasets/cdr{i % 50}",
        job=job,
        list_a=comms.WatchlistRef(
            name="regions/EMSOU/watchlists/rso", kind=comms.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER
        ),
        number_a="+447700900001",
        list_b=comms.WatchlistRef(name="regions/EMSOU/watchlists/victims", kind=comms.WATCHLIST_KIND_VICTIM),
        number_b=f"+4477009{i % subjects:05d}",
        entity_id_b=f"bench-person-{i % subjects}",
        contact_count=3,
    )
    return build_event(message, domain="comms", source="toex/comms", region=Region.EMSOU)


def shape(sql: str) -> str:
    """A statement with its parameters and repeated VALUES rows folded, to count it by kind."""
    folded = re.sub(r"\$\d+", "$n", " ".join(sql.split()))
    folded = re.sub(r"(\(\$n(?:, \$n)*\))(?:, \(\$n(?:, \$n)*\))+", r"\1, ...", folded)
    return re.sub(r"IN \(\$n(?:, \$n)*\)", "IN ($n...)", folded)


async def profile(events: int, subjects: int, batch: int, profile_to: str | None) -> None:
    work = Path(tempfile.mkdtemp(prefix="toex-bench-"))
    work.chmod(0o755)
    pg = StatementStatsPostgres(data_dir=work / "pg")
    nats = NatsServer(store_dir=work / "nats")
    try:
        pg.start()
        nats.start()
        nc = await connect(nats.url, "bench-safeguarding-profile")
        js = nc.jetstream()
        await ensure_stream(js, COMMS_STREAM)
        for start in range(0, events, 500):
            found = (
                contact(i, subjects, "regions/EMSOU/jobs/benchjob")
                for i in range(start, min(events, start + 500))
            )
            await asyncio.gather(*(js.publish(e.subject, e.payload, headers=e.headers) for e in found))
        name = f"bench_sg_profile_{uuid.uuid4().hex[:6]}"
        database = pg.create_database(name)
        await asyncio.to_thread(upgrade, database, migrations_dir())
        pg.psql("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", name)
        engine = create_engine(database)
        sessions = session_factory(engine)
        counting = False
        began_at: dict[int, float] = {}
        # statement shape -> [times sent, seconds the client waited]
        sent: dict[str, list[float]] = collections.defaultdict(lambda: [0, 0.0])

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            began_at[id(cursor)] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            waited = time.perf_counter() - began_at.pop(id(cursor), time.perf_counter())
            if counting:
                entry = sent[shape(statement)]
                entry[0] += 1
                entry[1] += waited

        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
        # The batch prefetch, where the code has one (the bus registers it the same way).
        prefetch = getattr(triggers, "prefetch", None)
        consumer = IdempotentConsumer(
            nc=nc,
            js=js,
            uow_factory=lambda: SqlSafeguardingUnitOfWork(sessions),
            name=f"bench-profile-{uuid.uuid4().hex[:6]}",
            stream=COMMS_STREAM.name,
            subjects=SUBJECTS,
            handler=triggers.make_handler(),
            batch=batch,
            **({"prefetch": prefetch} if prefetch is not None else {}),
        )
        await consumer.setup()
        pg.psql("SELECT pg_stat_statements_reset()", name)
        assert pg.pid is not None
        stop = asyncio.Event()
        profiler = cProfile.Profile() if profile_to else None
        counting = True
        cpu_before = (own_cpu_seconds(), process_tree_cpu_seconds(pg.pid))
        if profiler is not None:
            profiler.enable()
        started = time.perf_counter()
        task = asyncio.create_task(consumer.run(stop))
        while consumer.counts[Outcome.PROCESSED] + consumer.counts[Outcome.DEAD_LETTERED] < events:
            if task.done():
                task.result()
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - started
        if profiler is not None and profile_to:
            profiler.disable()
            profiler.dump_stats(profile_to)
        cpu = (own_cpu_seconds() - cpu_before[0], process_tree_cpu_seconds(pg.pid) - cpu_before[1])
        counting = False
        stop.set()
        await task
        async with engine.connect() as conn:
            drafted = (await conn.execute(select(func.count()).select_from(referrals))).scalar_one()
            outbox = (await conn.execute(text("SELECT count(*) FROM outbox"))).scalar_one()
            server = (
                await conn.execute(
                    text(
                        "SELECT query, calls, total_exec_time FROM pg_stat_statements WHERE dbid = "
                        "(SELECT oid FROM pg_database WHERE datname = current_database()) "
                        "ORDER BY total_exec_time DESC"
                    )
                )
            ).all()
        await engine.dispose()
        await nc.close()
    finally:
        nats.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    print(f"code: {triggers.__file__}")
    print(
        f"{events:,} triggers in {seconds:.2f} s ({events / seconds:,.0f}/s); {drafted:,} referrals, "
        f"{outbox:,} outbox rows, {consumer.counts[Outcome.DEAD_LETTERED]} dead-lettered"
    )
    print(
        f"CPU per trigger: this process {cpu[0] / events * 1e6:,.0f} us, PostgreSQL {cpu[1] / events * 1e6:,.0f} us"
    )
    total = sum(int(count) for count, _ in sent.values())
    print(f"statements sent: {total:,}, {total / events:.2f} per trigger (COPY and BEGIN/COMMIT not counted)")
    print("  per trigger | client wait, ms per trigger | statement")
    for sql, (count, waited) in sorted(sent.items(), key=lambda kv: -kv[1][1]):
        print(f"  {count / events:11.3f} | {waited / events * 1000:27.3f} | {sql[:140]}")
    executed = sum(row.total_exec_time for row in server)
    print(f"server execution time: {executed / events:.3f} ms per trigger (pg_stat_statements)")
    for row in server[:12]:
        print(f"  {row.calls:7,} calls {row.total_exec_time:9.1f} ms  {' '.join(row.query.split())[:120]}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=2_000)
    parser.add_argument("--subjects", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cprofile", metavar="FILE", help="also write a cProfile of the run to FILE")
    args = parser.parse_args()
    asyncio.run(profile(args.events, args.subjects, args.batch, args.cprofile))


if __name__ == "__main__":
    main()
