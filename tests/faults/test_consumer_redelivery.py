"""A consumer killed between handling an event and acknowledging it: the event is delivered
again, to the next process, and its effect still happens once.

The consumer is safeguarding's, drafting a referral from comms' `WatchlistContactDetected`.
The first process commits the draft, then dies before its acknowledgement: the test stops the
consumer's task at that point (as a SIGKILL would, nothing after the commit runs) and shuts the
process down. JetStream delivers the event again once the acknowledgement wait runs out, to a
second process of the same service on the same database and durable consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime
from typing import Any

import nats
from google.protobuf.timestamp_pb2 import Timestamp
from toex.comms.events.v1 import events_pb2 as comms_events
from toex.comms.v1 import resources_pb2 as comms
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex_common.events import build_event
from toex_common.events.consumer import Outcome
from toex_kernel.regions import Region

from .matrix import SAFEGUARDING, about, event_ids, eventually, outbox, published, query

# How long JetStream waits for an acknowledgement before delivering again (30 s in production).
ACK_WAIT_SECONDS = 1.0


def stamp(when: datetime) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(when)
    return value


def watchlist_contact(victim: str) -> Any:
    """Comms' finding: a number on a victims' list in contact with a registered sex offender's."""
    message = comms_events.WatchlistContactDetected(
        dataset=f"regions/EMSOU/datasets/cdr-{uuid.uuid4().hex[:8]}",
        list_a=comms.WatchlistRef(
            name="regions/EMSOU/watchlists/rso", kind=comms.WATCHLIST_KIND_REGISTERED_SEX_OFFENDER
        ),
        number_a="+447700900001",
        list_b=comms.WatchlistRef(name="regions/EMSOU/watchlists/victims", kind=comms.WATCHLIST_KIND_VICTIM),
        number_b="+447700900002",
        entity_id_b=victim,
        contact_count=12,
        call_count=5,
        sms_count=7,
        total_duration_seconds=640,
        first_contact_time=stamp(datetime(2025, 3, 1, tzinfo=UTC)),
        last_contact_time=stamp(datetime(2025, 3, 20, tzinfo=UTC)),
    )
    return build_event(message, domain="comms", source="toex/comms", region=Region.EMSOU)


def triggers_consumer(app: Any) -> Any:
    return next(c for c in app.consumers if c.name.endswith("-comms-triggers"))


async def test_an_event_handled_but_not_acknowledged_takes_effect_once(
    broker: Any, launch: Any, postgres: Any
) -> None:
    settings = {"consume_triggers": True, "service_name": f"safeguarding-{uuid.uuid4().hex[:8]}"}
    committed = asyncio.Event()

    def slow_acks(app: Any) -> None:
        for consumer in app.consumers:
            consumer._ack_wait = ACK_WAIT_SECONDS

    def dies_after_commit(app: Any) -> None:
        slow_acks(app)
        consumer = triggers_consumer(app)
        process = consumer._process  # claim in the inbox, handle, commit: the ack comes after

        async def process_then_hang(event: Any) -> Outcome:
            outcome = await process(event)
            committed.set()
            await asyncio.Event().wait()  # never returns: the test kills the task here
            return outcome

        consumer._process = process_then_hang

    first = await launch(
        SAFEGUARDING, postgres=postgres, nats_url=broker.url, prepare=dies_after_commit, **settings
    )
    victim = f"ent-{uuid.uuid4().hex[:8]}"
    event = watchlist_contact(victim)
    nc = await nats.connect(broker.url)
    try:
        await nc.jetstream().publish(event.subject, event.payload, headers=event.headers)
    finally:
        await nc.close()
    await asyncio.wait_for(committed.wait(), 20)

    # The process dies: its consumer never acknowledges, then the rest shuts down.
    task = next(t for t in first.app.tasks if t.get_name() == triggers_consumer(first.app).name)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await first.stop()
    drafted = await query(first.dsn, "SELECT id FROM referrals WHERE subject_entity_id = $1", victim)
    assert len(drafted) == 1, "the first process committed the draft before it died"

    second = await launch(
        SAFEGUARDING,
        postgres=postgres,
        nats_url=broker.url,
        database=first.database,
        prepare=slow_acks,
        **settings,
    )
    consumer = triggers_consumer(second.app)

    async def delivered_again() -> bool:
        return consumer.counts[Outcome.DUPLICATE] + consumer.counts[Outcome.PROCESSED] >= 1

    await eventually(delivered_again, "the unacknowledged event to be delivered again")

    # One draft, with the event's evidence once.
    listed = await second.stub.ListReferrals(
        pb.ListReferralsRequest(parent="regions/EMSOU", page_size=50), metadata=second.md()
    )
    drafts = [r for r in listed.referrals if r.subject.entity_id == victim]
    assert len(drafts) == 1, drafts
    draft = drafts[0]
    assert draft.created_by == "trigger:WatchlistContactDetected"
    assert [e.ref for e in draft.evidence].count(event.event_id) == 1

    # Its events published once: the draft, and no evidence added by the repeat.
    async def relayed() -> bool:
        return not await outbox(second.dsn)

    await eventually(relayed, "the outbox to empty")
    messages = await published(
        broker.url,
        "safeguarding",
        until=lambda found: any(about(m.headers.get("ce-subject", ""), draft.name) for m in found),
    )
    ours = [m for m in messages if about(m.headers.get("ce-subject", ""), draft.name)]
    assert [m.headers["ce-type"].rsplit(".", 1)[-1] for m in ours] == ["ReferralDrafted"]
    assert set(event_ids(ours).values()) == {1}

    # The inbox knew the event: the repeat was acknowledged as done, not handled again.
    assert consumer.counts[Outcome.DUPLICATE] == 1 and consumer.counts[Outcome.PROCESSED] == 0

    # Acknowledged this time: nothing is left waiting for the consumer.
    nc = await nats.connect(broker.url)
    try:
        info = await nc.jetstream().consumer_info("COMMS", consumer.name)
    finally:
        await nc.close()
    assert info.num_ack_pending == 0 and info.num_pending == 0
