"""PostgreSQL restarted mid-flow: a burst of writes runs while the service's database restarts.

A call caught by the restart may fail, with a status that tells the caller to try again
(UNAVAILABLE), never INTERNAL; the caller retries with the same request id (an import: the same
bytes) until answered. Afterwards every answered write is stored once, its events are on the
stream once, and the same process serves new calls without having been restarted.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import grpc
import pytest

from .matrix import (
    ENTITY,
    SAFEGUARDING,
    SERVICES,
    ServiceSpec,
    covers,
    event_ids,
    eventually,
    ids_of,
    outbox,
    published,
    stored_ids,
)

# Statuses that tell a caller the call may be tried again as it is.
RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
WRITERS = 3  # concurrent callers
AFTER_RESTART = 2  # writes each caller makes once the database is back


@dataclass
class Burst:
    names: list[str] = field(default_factory=list)  # every answered write's resources
    failures: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)  # (code, details)
    retried: int = 0  # writes answered only on a retry
    in_flight: int = 0  # writes under way now
    overlapping: int = 0  # writes under way when the restart began, or started during it


async def write_until_answered(service: Any, spec: ServiceSpec, n: int, burst: Burst) -> None:
    """One write, repeated with the same request id until it is answered (at most 30 s)."""
    request_id = str(uuid.uuid4())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    failed = False
    burst.in_flight += 1
    try:
        while True:
            try:
                burst.names += await spec.write(service, n, request_id)
                burst.retried += failed
                return
            except grpc.aio.AioRpcError as exc:
                failed = True
                burst.failures.append((exc.code(), exc.details() or ""))
                if loop.time() > deadline:
                    raise
                await asyncio.sleep(0.2)
    finally:
        burst.in_flight -= 1


async def burst_across_restart(service: Any, spec: ServiceSpec, postgres: Any) -> Burst:
    """WRITERS callers write one after another; once each has written, the database restarts;
    each goes on writing through the restart and AFTER_RESTART times after it."""
    burst = Burst()
    started = asyncio.Barrier(WRITERS + 1)
    restarting = asyncio.Event()
    restarted = asyncio.Event()
    numbers = iter(range(10_000))

    async def caller() -> None:
        await write_until_answered(service, spec, next(numbers), burst)
        await started.wait()
        while not restarted.is_set():
            burst.overlapping += restarting.is_set()
            await write_until_answered(service, spec, next(numbers), burst)
        for _ in range(AFTER_RESTART):
            await write_until_answered(service, spec, next(numbers), burst)

    async def restart() -> None:
        await started.wait()
        await asyncio.sleep(0.1)  # the callers' next writes are under way
        restarting.set()
        burst.overlapping += burst.in_flight
        try:
            await asyncio.to_thread(postgres.restart)
        finally:
            restarted.set()

    await asyncio.gather(restart(), *(caller() for _ in range(WRITERS)))
    return burst


@pytest.mark.parametrize("spec", SERVICES, ids=str)
async def test_writes_across_a_database_restart_are_stored_once(
    spec: ServiceSpec,
    broker: Any,
    launch: Any,
    restartable_postgres: Any,
    request: pytest.FixtureRequest,
) -> None:
    extra = {"pnd_url": request.getfixturevalue("pnd_url")} if spec.needs_pnd else {}
    service = await launch(spec, postgres=restartable_postgres, nats_url=broker.url, **extra)

    burst = await burst_across_restart(service, spec, restartable_postgres)

    # Shown with a failure (pytest prints a failed test's output), or with -s.
    print(
        f"{spec.name}: {len(burst.names)} writes answered, {len(burst.failures)} failed attempts "
        f"({Counter(code.name + ': ' + details for code, details in burst.failures)}), {burst.retried} answered on a retry, "
        f"{burst.overlapping} under way during the restart"
    )

    assert burst.overlapping > 0, "no write was under way during the restart"
    unclear = [(code.name, details) for code, details in burst.failures if code not in RETRYABLE]
    assert not unclear, f"calls failed with statuses a caller cannot act on: {unclear}"
    assert not [d for _, d in burst.failures if "Traceback" in d or 'File "' in d]
    assert await stored_ids(service) == ids_of(burst.names), "each answered write stored exactly once"

    # The same process serves new calls: a new write is answered at the first attempt.
    fresh = await spec.write(service, 5_000, str(uuid.uuid4()))
    assert await stored_ids(service) == ids_of(burst.names + fresh)

    # Every stored change's events are published, none twice.
    async def relayed() -> bool:
        return not await outbox(service.dsn)

    names = burst.names + fresh
    await eventually(relayed, "the outbox to empty", timeout=30)
    messages = await published(
        broker.url,
        spec.domain,
        until=lambda found: covers((m.headers.get("ce-subject", "") for m in found), names),
    )
    assert covers((m.headers.get("ce-subject", "") for m in messages), names), (
        "an answered change's events are missing"
    )
    repeated = {event: count for event, count in event_ids(messages).items() if count > 1}
    assert not repeated, f"events on the stream more than once: {repeated}"


@pytest.mark.parametrize("spec", [ENTITY, SAFEGUARDING], ids=str)
async def test_sessions_dropped_by_the_database_answer_unavailable_never_internal(
    spec: ServiceSpec, broker: Any, launch: Any, restartable_postgres: Any
) -> None:
    """The database stays up but drops the service's sessions (a failover, an administrator's
    pg_terminate_backend): a call caught by it is told to try again, never INTERNAL, and the
    retry is answered."""
    service = await launch(spec, postgres=restartable_postgres, nats_url=broker.url)
    burst = Burst()
    done = asyncio.Event()
    numbers = iter(range(10_000))

    async def caller() -> None:
        for _ in range(15):
            await write_until_answered(service, spec, next(numbers), burst)
        done.set()

    async def drop_sessions() -> int:
        dropped = 0
        conn = await asyncpg.connect(service.dsn)
        try:
            while not done.is_set():
                dropped += len(
                    await conn.fetch(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                )
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
        return dropped

    dropped, *_ = await asyncio.gather(drop_sessions(), *(caller() for _ in range(WRITERS)))
    print(f"{spec.name}: {dropped} sessions dropped, {len(burst.failures)} failed attempts: {burst.failures}")
    assert dropped > 0
    codes = Counter(code for code, _ in burst.failures)
    assert grpc.StatusCode.INTERNAL not in codes, burst.failures
    assert set(codes) <= RETRYABLE, burst.failures
    assert await stored_ids(service) == ids_of(burst.names), "each answered write stored exactly once"
