"""Outbox relay and idempotent consumer against real PostgreSQL and nats-server."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.client import Client
from sqlalchemy import func, select
from toex.tasking.events.v1 import events_pb2
from toex_common.db import inbox_table, outbox_table, session_factory
from toex_common.events import StreamSpec, build_event, ensure_stream
from toex_common.events.consumer import IdempotentConsumer, Outcome, PermanentError
from toex_common.events.outbox import OutboxRelay, pending
from toex_common.uow import DriverUnitOfWork, SqlAlchemyUnitOfWork
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration


@pytest.fixture
async def stream(nc: Client) -> StreamSpec:
    # A stream of its own per test: a domain token nobody else uses.
    domain = f"t{uuid.uuid4().hex[:8]}"
    spec = StreamSpec.for_domain(domain.upper(), domain)
    await ensure_stream(nc.jetstream(), spec)
    return spec


def envelope(domain: str, region: Region = Region.EMSOU, job: str = "regions/EMSOU/jobs/x"):
    return build_event(events_pb2.FeedbackRecorded(job=job), domain=domain, source="test", region=region)


async def stream_count(nc: Client, spec: StreamSpec) -> int:
    return (await nc.jetstream().stream_info(spec.name)).state.messages


async def test_relay_publishes_committed_rows_once_even_when_retried(engine, nc, stream) -> None:
    domain = stream.subjects[0].split(".")[2]
    uow = SqlAlchemyUnitOfWork(session_factory(engine))
    events = [envelope(domain) for _ in range(5)]
    async with uow:
        for event in events:
            uow.publish(event)
        await uow.commit()
    async with uow:  # rolled back: never published
        uow.publish(envelope(domain))
        await uow.rollback()
    relay = OutboxRelay(engine, nc.jetstream())
    assert await relay.relay_once() == (5, 0)
    assert await pending(engine) == 0
    async with engine.connect() as conn:
        assert (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one() == 0
    # Acknowledgements lost after the publish (the rows still there): the relay publishes the same
    # events again; the stream drops the repeats.
    async with uow:
        for event in events:
            uow.publish(event)
        await uow.commit()
    assert await relay.relay_once() == (5, 0)
    assert await stream_count(nc, stream) == 5


def a_consumer(
    nc: Client, stream: StreamSpec, sessions: Any, handler: Any, **options: Any
) -> IdempotentConsumer:
    """A consumer of its own (a fresh durable name) on the test's stream, in SQLAlchemy sessions."""
    return IdempotentConsumer(
        nc=nc,
        js=nc.jetstream(),
        uow_factory=lambda: SqlAlchemyUnitOfWork(sessions),
        name=f"c{uuid.uuid4().hex[:8]}",
        stream=stream.name,
        subjects=stream.subjects,
        handler=handler,
        **options,
    )


async def run_consumer(consumer: IdempotentConsumer, until: Any, limit: float = 15.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while loop.time() < deadline and not until():
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_consumer_processes_each_event_once_and_isolates_failures(engine, nc, stream) -> None:
    js = nc.jetstream()
    domain = stream.subjects[0].split(".")[2]
    sessions = session_factory(engine)
    good = [envelope(domain) for _ in range(20)]
    poison = envelope(domain, job="poison")
    flaky = envelope(domain, job="flaky")
    for item in [*good, poison, flaky]:
        await js.publish(item.subject, item.payload, headers=item.headers)
    # the same event delivered again under another message id (for example re-sent by a peer)
    duplicate = dict(good[0].headers, **{"Nats-Msg-Id": "resent-" + good[0].event_id})
    await js.publish(good[0].subject, good[0].payload, headers=duplicate)

    handled: list[str] = []
    flaky_attempts = 0

    async def handler(event, uow) -> None:
        nonlocal flaky_attempts
        if event.message.job == "poison":
            raise PermanentError("cannot be processed")
        if event.message.job == "flaky":
            flaky_attempts += 1
            if flaky_attempts < 2:
                raise ConnectionError("dependency down")
        handled.append(event.event_id)

    consumer = a_consumer(nc, stream, sessions, handler, backoff_seconds=(0.2,))
    await run_consumer(
        consumer,
        lambda: consumer.counts[Outcome.PROCESSED] >= 21 and consumer.counts[Outcome.DEAD_LETTERED] >= 1,
    )
    # A batch that failed ran its handlers in a transaction rolled back: what counts is what was
    # committed, each event once (the inbox below).
    assert set(handled) == {e.event_id for e in good} | {flaky.event_id}
    assert consumer.counts[Outcome.PROCESSED] == 21
    async with engine.connect() as conn:
        inbox = (await conn.execute(select(func.count()).select_from(inbox_table))).scalar_one()
    assert inbox == 21
    # This consumer's dead letters (other tests on this server dead-letter into EMSOU too).
    dead = await js.subscribe(f"toex.emsou.deadletter.{consumer.name}", ordered_consumer=True)
    message = await dead.next_msg(timeout=5)
    assert message.headers["ce-id"] == poison.event_id
    assert message.headers["toex-dead-consumer"] == consumer.name
    assert "cannot be processed" in message.headers["toex-dead-reason"]


async def test_an_event_a_batch_holds_twice_is_handled_once_in_the_batch(engine, nc, stream) -> None:
    """Published again under a new message id, an event's second copy in the same fetched batch
    is a duplicate: the batch still commits as one, the event is handled once, in order."""
    js = nc.jetstream()
    domain = stream.subjects[0].split(".")[2]
    sessions = session_factory(engine)
    events = [envelope(domain) for _ in range(10)]
    for item in events[:5]:
        await js.publish(item.subject, item.payload, headers=item.headers)
    again = dict(events[2].headers, **{"Nats-Msg-Id": "resent-" + events[2].event_id})
    await js.publish(events[2].subject, events[2].payload, headers=again)
    for item in events[5:]:
        await js.publish(item.subject, item.payload, headers=item.headers)

    handled: list[str] = []

    async def handler(event, uow) -> None:
        handled.append(event.event_id)

    consumer = a_consumer(nc, stream, sessions, handler)
    one_by_one = []
    whole = consumer.handle

    async def handle(message):
        one_by_one.append(message)
        return await whole(message)

    consumer.handle = handle  # type: ignore[method-assign]
    await run_consumer(consumer, lambda: consumer.counts[Outcome.DUPLICATE] >= 1 and len(handled) >= 10)
    assert handled == [e.event_id for e in events]
    assert consumer.counts[Outcome.PROCESSED] == 10
    assert consumer.counts[Outcome.DUPLICATE] == 1
    assert one_by_one == []


async def test_consumer_dead_letters_after_max_deliveries(engine, nc, stream) -> None:
    js = nc.jetstream()
    domain = stream.subjects[0].split(".")[2]
    sessions = session_factory(engine)
    doomed = envelope(domain, region=Region.ERSOU, job="never")
    await js.publish(doomed.subject, doomed.payload, headers=doomed.headers)
    attempts = 0

    async def handler(event, uow) -> None:
        nonlocal attempts
        attempts += 1
        raise TimeoutError("still down")

    consumer = a_consumer(nc, stream, sessions, handler, max_deliver=3, backoff_seconds=(0.1,))
    dead = await js.subscribe(f"toex.ersou.deadletter.{consumer.name}", ordered_consumer=True)
    await run_consumer(consumer, lambda: attempts >= 3)
    message = await dead.next_msg(timeout=5)
    assert message.headers["ce-id"] == doomed.event_id
    assert "3 deliveries" in message.headers["toex-dead-reason"]
    assert attempts == 3


async def test_consumer_on_driver_units_runs_after_commit_work_once_per_committed_event(
    engine, nc, stream
) -> None:
    """A service whose unit of work is the driver's (tasking) consumes through the same inbox;
    work registered to follow the commit runs once per event it committed, never for one
    refused or rolled back."""
    js = nc.jetstream()
    domain = stream.subjects[0].split(".")[2]
    good = [envelope(domain) for _ in range(10)]
    poison = envelope(domain, job="poison")
    for item in [*good, poison]:
        await js.publish(item.subject, item.payload, headers=item.headers)
    resent = dict(good[0].headers, **{"Nats-Msg-Id": "resent-" + good[0].event_id})
    await js.publish(good[0].subject, good[0].payload, headers=resent)
    committed: list[str] = []

    async def handler(event, uow) -> None:
        async def done() -> None:
            committed.append(event.event_id)

        uow.after_commit(done)
        if event.message.job == "poison":
            raise PermanentError("cannot be processed")

    consumer = IdempotentConsumer(
        nc=nc,
        js=js,
        uow_factory=lambda: DriverUnitOfWork(engine),
        name=f"c{uuid.uuid4().hex[:8]}",
        stream=stream.name,
        subjects=stream.subjects,
        handler=handler,
        backoff_seconds=(0.2,),
    )
    counts = consumer.counts
    await run_consumer(
        consumer,
        lambda: counts[Outcome.DEAD_LETTERED] and counts[Outcome.DUPLICATE] and len(committed) >= 10,
    )
    assert counts[Outcome.DUPLICATE] == 1  # the resent copy found its claim
    assert sorted(committed) == sorted(e.event_id for e in good)
    async with engine.connect() as conn:
        claimed = (await conn.execute(select(inbox_table.c.event_id))).scalars().all()
    assert sorted(claimed) == sorted(e.event_id for e in good)


async def test_a_prefetch_runs_once_per_batch_on_its_claimed_events_before_their_handlers(
    engine, nc, stream
) -> None:
    js = nc.jetstream()
    domain = stream.subjects[0].split(".")[2]
    sessions = session_factory(engine)
    items = [envelope(domain) for _ in range(12)]
    for item in items:
        await js.publish(item.subject, item.payload, headers=item.headers)
    name = f"c{uuid.uuid4().hex[:8]}"
    seen_before = {items[0].event_id, items[1].event_id}
    async with SqlAlchemyUnitOfWork(sessions) as uow:  # processed before: not the handlers' again
        await uow.claim_events(name, [(e, items[0].subject) for e in seen_before])
        await uow.commit()
    prefetched: dict[str, int] = {}
    batches: list[list[str]] = []
    handled: list[str] = []

    async def prefetch(events, uow) -> None:
        batches.append([e.event_id for e in events])
        prefetched.update((e.event_id, id(uow)) for e in events)

    async def handler(event, uow) -> None:
        assert prefetched.get(event.event_id) == id(uow), "handled before its batch's prefetch"
        handled.append(event.event_id)

    consumer = IdempotentConsumer(
        nc=nc,
        js=js,
        uow_factory=lambda: SqlAlchemyUnitOfWork(sessions),
        name=name,
        stream=stream.name,
        subjects=stream.subjects,
        handler=handler,
        prefetch=prefetch,
    )
    await run_consumer(consumer, lambda: consumer.counts[Outcome.DUPLICATE] + len(handled) >= 12)
    fresh = [e.event_id for e in items if e.event_id not in seen_before]
    assert handled == fresh and batches == [fresh]

    # A prefetch that fails holds nothing back: the batch is taken one event at a time.
    async def failing(events, uow) -> None:
        raise ConnectionError("lookup failed")

    again: list[str] = []

    async def record(event, uow) -> None:
        again.append(event.event_id)

    consumer = a_consumer(nc, stream, sessions, record, prefetch=failing)
    await run_consumer(consumer, lambda: len(again) >= 12)
    assert again == [e.event_id for e in items] and consumer.counts[Outcome.PROCESSED] == 12


async def test_a_region_relay_leaves_another_regions_rows_and_is_not_held_back_by_them(
    engine, nc, stream
) -> None:
    """Rows queued for LONDON before the installation became EMSOU's: an EMSOU relay publishes
    its own (queued before and after them) at once, reports the others and leaves them queued; a
    relay of every region (a single installation) still publishes them."""
    domain = stream.subjects[0].split(".")[2]
    uow = SqlAlchemyUnitOfWork(session_factory(engine))
    own_before = [envelope(domain) for _ in range(3)]
    theirs = [envelope(domain, Region.LONDON, job="regions/LONDON/jobs/x") for _ in range(2)]
    own_after = [envelope(domain) for _ in range(3)]
    async with uow:
        for event in [*own_before, *theirs, *own_after]:
            uow.publish(event)
        await uow.commit()
    assert all(e.subject.startswith("toex.emsou.") for e in own_before + own_after)
    assert all(e.subject.startswith("toex.london.") for e in theirs)

    relay = OutboxRelay(engine, nc.jetstream(), subjects=["toex.emsou.>"])
    assert await relay.report_outside() == 2
    assert await relay.relay_pass() == (6, 0)  # nothing failed, nothing waited on
    assert await stream_count(nc, stream) == 6
    assert await pending(engine) == 2
    assert await relay.relay_pass() == (0, 0)

    assert await OutboxRelay(engine, nc.jetstream()).relay_pass() == (2, 0)
    assert await stream_count(nc, stream) == 8
    assert await pending(engine) == 0


async def _batches_of_a_trickle(engine, nc, stream, linger: float) -> list[list[str]]:
    """Six events published 30 ms apart to a consumer already waiting: the events of each
    transaction it took them in."""
    js = nc.jetstream()
    domain = stream.subjects[0].split(".")[2]
    items = [envelope(domain) for _ in range(6)]
    sessions = session_factory(engine)
    transactions: list[list[str]] = []

    def unit_of_work() -> SqlAlchemyUnitOfWork:
        transactions.append([])
        return SqlAlchemyUnitOfWork(sessions)

    async def handler(event, uow) -> None:
        transactions[-1].append(event.event_id)

    consumer = IdempotentConsumer(
        nc=nc,
        js=js,
        uow_factory=unit_of_work,
        name=f"c{uuid.uuid4().hex[:8]}",
        stream=stream.name,
        subjects=stream.subjects,
        handler=handler,
        linger_seconds=linger,
        fetch_wait_seconds=2.0,
        deliver_new_only=True,
    )

    async def trickle() -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while loop.time() < deadline:  # its durable there: it is waiting for a first event
            try:
                await js.consumer_info(stream.name, consumer.name)
                break
            except Exception:
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
        for item in items:
            await js.publish(item.subject, item.payload, headers=item.headers)
            await asyncio.sleep(0.03)

    publishing = asyncio.create_task(trickle())
    await run_consumer(consumer, lambda: consumer.counts[Outcome.PROCESSED] >= len(items))
    await publishing
    assert consumer.counts[Outcome.PROCESSED] == len(items)
    batches = [events for events in transactions if events]
    assert [e for batch in batches for e in batch] == [i.event_id for i in items]
    return batches


async def test_a_short_batch_lingers_for_the_events_that_follow(engine, nc, stream) -> None:
    """Events trickling in are taken many to a transaction: a batch that came back short waits
    the linger for the rest. Without a linger the first event goes alone (the control)."""
    assert len(await _batches_of_a_trickle(engine, nc, stream, linger=1.0)) == 1
    assert len(await _batches_of_a_trickle(engine, nc, stream, linger=0.0)) > 1
