"""An idempotent consumer in its own process, as a consuming service runs it: processes N events
(no-op handler, inbox row per event, one commit per fetched batch), then prints the wall-clock
time it finished.

    python -m bench.tasking.consumer_proc DATABASE_URL NATS_URL STREAM SUBJECT N
"""

from __future__ import annotations

import asyncio
import sys
import time

from toex_common.db import create_engine, session_factory
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.nats import connect
from toex_common.telemetry import configure_tracing
from toex_common.uow import SqlAlchemyUnitOfWork


async def main(database_url: str, nats_url: str, stream: str, subject: str, count: int) -> None:
    configure_tracing("bench-consumer")  # as a service's `serve` does (no exporter)
    engine = create_engine(database_url)
    sessions = session_factory(engine)
    nc = await connect(nats_url, "bench-consumer")
    processed = 0
    done = asyncio.Event()

    async def handler(event: object, uow: object) -> None:
        nonlocal processed
        processed += 1
        if processed >= count:
            done.set()

    consumer = IdempotentConsumer(
        nc=nc,
        js=nc.jetstream(),
        uow_factory=lambda: SqlAlchemyUnitOfWork(sessions),
        name="bench",
        stream=stream,
        subjects=[subject],
        handler=handler,
        batch=256,
    )
    await consumer.setup()
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    print("ready", flush=True)
    await done.wait()
    print(f"finished {time.time():.6f}", flush=True)
    stop.set()
    await task
    await nc.close()
    await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])))
