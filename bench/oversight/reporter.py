"""The oversight reporter's two paths, A/B in one process: through the outbox (inbox claim and
outbox row in the consumer's transaction, the relay publishing) against straight to OVERSIGHT
(DirectReporter: the copies published, the originals acknowledged once the stream has them).

One nats-server and one PostgreSQL of the benchmark's own. A region's events (EMSOU's share of
bench/oversight/workload.py's mix) are queued on the producers' streams first; then each round
starts the four reporter consumers under new names (so each reads every event from the start),
with the outbox relay for the outbox path, and times until OVERSIGHT holds a copy of every
event. Measured: wall seconds, and CPU seconds of this process (which runs only the reporter
then) and of PostgreSQL's process tree, per event. The rounds alternate (A B B A ...).

    python -m bench.oversight.reporter [--events N] [--rounds R]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from toex_common.db import create_engine
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.outbox import OutboxRelay
from toex_common.events.streams import OVERSIGHT_STREAM
from toex_common.migrations import upgrade
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_kernel.regions import Region
from toex_oversight.__main__ import migrations_dir
from toex_oversight.adapters.uow import PgOversightUnitOfWork
from toex_oversight.entrypoints import reporter

from bench.common import machine, own_cpu_seconds, process_tree_cpu_seconds, write_results
from bench.oversight.run import fresh_streams, publish
from bench.oversight.workload import in_batches, workload


async def one_round(
    path: str, events: int, pg: Postgres, nats_server: NatsServer, nc: Any, js: Any
) -> dict[str, float]:
    await js.purge_stream(OVERSIGHT_STREAM.name)
    database = pg.create_database(f"bench_ov_reporter_{path}_{uuid.uuid4().hex[:6]}")
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine = create_engine(database)
    bus = MessageBus()
    reporter.subscribe(bus, f"bench-{path}-{uuid.uuid4().hex[:6]}", direct=path == "direct")

    def make(
        consumer_class: type[IdempotentConsumer] = IdempotentConsumer, **config: Any
    ) -> IdempotentConsumer:
        return consumer_class(nc=nc, js=js, **config)

    consumers = bus.consumers(make, lambda: PgOversightUnitOfWork(engine))
    for consumer in consumers:
        await consumer.setup()
    stop = asyncio.Event()
    relay = OutboxRelay(engine, js, poll_seconds=1.0)
    cpu_before = (own_cpu_seconds(), process_tree_cpu_seconds(pg.pid or 0))
    started = time.perf_counter()
    tasks = [asyncio.create_task(c.run(stop)) for c in consumers]
    if path == "outbox":
        tasks.append(asyncio.create_task(relay.run(stop)))
    while (await js.stream_info(OVERSIGHT_STREAM.name)).state.messages < events:
        await asyncio.sleep(0.05)
    wall = time.perf_counter() - started
    cpu_after = (own_cpu_seconds(), process_tree_cpu_seconds(pg.pid or 0))
    stop.set()
    await asyncio.gather(*tasks)
    await engine.dispose()
    copies = (await js.stream_info(OVERSIGHT_STREAM.name)).state.messages
    return {
        "wall": wall,
        "own_us": (cpu_after[0] - cpu_before[0]) / events * 1e6,
        "pg_us": (cpu_after[1] - cpu_before[1]) / events * 1e6,
        "copies": copies,
    }


async def measure(events: int, rounds: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="toex-bench-reporter-"))
    work.chmod(0o755)
    pg = Postgres(data_dir=work / "pg")
    nats_server = NatsServer(store_dir=work / "nats")
    pg.start()
    nats_server.start()
    try:
        nc = await nats.connect(nats_server.url)
        js = nc.jetstream()
        await fresh_streams(js)
        planned = [p for p in workload(2 * events, seed=5)[0] if p.region is Region.EMSOU][:events]
        for batch in in_batches(planned, 1000):
            await publish(js, batch)
        order = [("outbox", "direct") if r % 2 == 0 else ("direct", "outbox") for r in range(rounds)]
        results: dict[str, list[dict[str, float]]] = {"outbox": [], "direct": []}
        for pair in order:
            for path in pair:
                got = await one_round(path, len(planned), pg, nats_server, nc, js)
                results[path].append(got)
                print(path, {k: round(v, 1) for k, v in got.items()}, flush=True)
        await nc.close()
    finally:
        nats_server.stop()
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)

    def med(path: str, key: str) -> float:
        return statistics.median(r[key] for r in results[path])

    rows = [
        "| path | rounds | wall s (median) | events/s | reporter CPU µs/event | PostgreSQL CPU µs/event | total µs/event | copies on OVERSIGHT |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for path in ("outbox", "direct"):
        total = med(path, "own_us") + med(path, "pg_us")
        rows.append(
            f"| {path} | {len(results[path])} | {med(path, 'wall'):.2f} | {len(planned) / med(path, 'wall'):,.0f} | "
            f"{med(path, 'own_us'):.0f} | {med(path, 'pg_us'):.0f} | {total:.0f} | "
            f"{', '.join(str(int(r['copies'])) for r in results[path])} |"
        )
    ratio_wall = med("outbox", "wall") / med("direct", "wall")
    ratio_cpu = (med("outbox", "own_us") + med("outbox", "pg_us")) / (
        med("direct", "own_us") + med("direct", "pg_us")
    )
    report = "\n".join(
        [
            "# The oversight reporter: outbox against direct (bench/oversight/reporter.py)",
            "",
            f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}; `python -m bench.oversight.reporter "
            f"--events {events} --rounds {rounds}`. {len(planned):,} EMSOU events queued on the producers' "
            "streams, then each round's four reporter consumers (new names, reading from the start) timed "
            "until OVERSIGHT holds every copy; rounds alternated (outbox, direct, direct, outbox, ...). CPU "
            "from /proc: this process (the reporter alone) and PostgreSQL's process tree. The machine is "
            "shared with other work: wall times are noisy, CPU per event less so.",
            "",
            *rows,
            "",
            f"Outbox to direct: wall {ratio_wall:.2f} times, CPU per event (reporter + PostgreSQL) {ratio_cpu:.2f} times.",
            "",
        ]
    )
    write_results("oversight-reporter", report)
    print(report)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    asyncio.run(measure(args.events, args.rounds))


if __name__ == "__main__":
    main()
