"""The reporter, in every installation: its own region's events the national read model counts,
republished value-free on `toex.<region>.oversight.<Event>` (the OVERSIGHT stream), the one
stream of a region's events the hub sources whole.

Each consumer (`<service>-report-tasking`, `-safeguarding`, `-pnd`, `-entity`) reads its
installation's own subjects (the platform narrows `toex.*` to the installation's region; a
single installation reads every region's). Each event is copied with only its type's allowed
fields (`adapters/scrub.py`) and written to the outbox in the consumer's transaction, beside the
inbox claim: reported once, whatever is redelivered (the inbox), and published until the stream
has it (the relay, under the original event id as `Nats-Msg-Id`, so a re-publish is dropped).
The copy keeps the event's type, id, occurrence time and revision: the aggregator merges copies
exactly as it would the originals.
"""

from __future__ import annotations

from typing import Any

from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError
from toex_common.events.envelope import EventEnvelope, IncomingEvent

from toex_oversight.adapters import events, scrub

DOMAIN = "oversight"

# The headers a reported copy carries: identity, type, time and label. Not `ce-subject` (the
# resource, which may name a record) or anything a producer adds later.
HEADERS = (
    "Nats-Msg-Id",
    "ce-specversion",
    "ce-id",
    "ce-source",
    "ce-type",
    "ce-time",
    "content-type",
    "toex-region",
    "toex-handling",
    "traceparent",
)


def reported(event: IncomingEvent) -> EventEnvelope:
    """The value-free copy of `event`, on its region's oversight subject, under its id."""
    if event.message is None:
        raise PermanentError(f"{event.event_type or 'an untyped event'} could not be decoded")
    region = event.region
    if region is None:
        raise PermanentError(f"subject {event.subject!r} names no region")
    try:
        copy = scrub.scrub(event.message)
    except scrub.NotReported as exc:
        raise PermanentError(str(exc)) from None
    headers = {name: event.headers[name] for name in HEADERS if name in event.headers}
    headers["Nats-Msg-Id"] = headers["ce-id"] = event.event_id
    headers["ce-type"] = event.event_type
    return EventEnvelope(
        event_id=event.event_id,
        subject=f"toex.{region.token}.{DOMAIN}.{event.message.DESCRIPTOR.name}",
        event_type=event.event_type,
        payload=copy.SerializeToString(),
        headers=headers,
    )


async def on_event(event: IncomingEvent, uow: Any) -> None:
    uow.publish(reported(event))


def subscribe(bus: MessageBus, service: str, *, batch: int = 256, fetch_wait_seconds: float = 0.1) -> None:
    """The consumers `<service>-report-tasking`, `-safeguarding`, `-pnd` and `-entity`."""
    options: dict[str, Any] = {"batch": batch, "fetch_wait_seconds": fetch_wait_seconds}
    for event_type in events.JOB_EVENTS:
        bus.on(f"{service}-report-tasking", event_type, on_event, **options)
    for event_type in events.REFERRAL_EVENTS:
        bus.on(f"{service}-report-safeguarding", event_type, on_event, **options)
    for event_type in (*events.PND_RESULTS, events.RECONCILIATION_COMPLETED):
        bus.on(f"{service}-report-pnd", event_type, on_event, **options)
    bus.on(f"{service}-report-entity", events.DECONFLICTION_NOTICE, on_event, **options)
