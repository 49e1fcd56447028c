"""The reporter, in every installation: its own region's events the national read model counts,
republished value-free on `toex.<region>.oversight.<Event>` (the OVERSIGHT stream), the one
stream of a region's events the hub sources whole.

Each consumer (`<service>-report-tasking`, `-safeguarding`, `-pnd`, `-entity`) reads its
installation's own subjects (the platform narrows `toex.*` to the installation's region; a
single installation reads every region's). Each event is copied with only its type's allowed
fields (`adapters/scrub.py`), under the original event id as `Nats-Msg-Id`. The copy keeps the
event's type, id, occurrence time and revision: the aggregator merges copies exactly as it would
the originals.

Two ways to publish the copies (`TOEX_REPORTER`):

- `direct` (the default): `DirectReporter` publishes a fetched batch's copies straight to
  OVERSIGHT and acknowledges the originals once the stream has acknowledged every copy; no
  database. A copy published twice (a crash between the stream's acknowledgement and the
  original's, the broker away, a redelivery) is dropped by OVERSIGHT's duplicate window, and after
  it by the aggregator's inbox, which claims the original's event id: what the reporter's own
  inbox and outbox did, without two writes and a relay's poll per event.
- `outbox`: the copy written to the outbox in the consumer's transaction, beside the inbox claim,
  and published by the relay.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nats.aio.msg import Msg
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import IdempotentConsumer, Outcome, PermanentError, check_event
from toex_common.events.envelope import EventEnvelope, IncomingEvent, decode

from toex_oversight.adapters import events, scrub

log = logging.getLogger(__name__)

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


class _Copies:
    """What a handler publishes, kept to be published at once (the handlers' `uow.publish`)."""

    def __init__(self) -> None:
        self.envelopes: list[EventEnvelope] = []

    def publish(self, envelope: EventEnvelope) -> None:
        self.envelopes.append(envelope)


class DirectReporter(IdempotentConsumer):
    """A reporter consumer that publishes its handlers' copies straight to the stream.

    For a fetched batch: each event decoded and checked as the platform's consumer checks it
    (an id, a label matching its subject), its handler run with a collector in place of a unit
    of work, every copy published at once (JetStream's asynchronous publish, `Nats-Msg-Id` = the
    event id), and each original acknowledged once the stream has acknowledged its copies. A
    refused event (undecodable, no allow-list, a forged label) is dead-lettered as the platform's
    consumer does. A copy the stream did not take in `publish_timeout_seconds` (the broker away,
    the stream unavailable) leaves its original unacknowledged (`nak` with a delay): it is
    redelivered and published again, however long that takes, so it is never dead-lettered for
    it (the consumer's maximum deliveries is unlimited)."""

    def __init__(self, *, publish_timeout_seconds: float = 10.0, **config: Any) -> None:
        config["max_deliver"] = -1
        super().__init__(**config)
        self._publish_timeout = publish_timeout_seconds

    async def handle_batch(self, messages: list[Msg]) -> None:
        ready: list[tuple[Msg, IncomingEvent, list[EventEnvelope]]] = []
        for message in messages:
            event = decode(message.subject, message.data, message.headers)
            try:
                check_event(event)
                copies = _Copies()
                await self._handler(event, copies)
            except PermanentError as exc:
                self.counts[await self._dead_letter(message, event, f"permanent: {exc}")] += 1
                continue
            ready.append((message, event, copies.envelopes))
        if not ready:
            return
        futures = [
            [
                await self._js.publish_async(copy.subject, copy.payload, headers=copy.headers)
                for copy in envelopes
            ]
            for _, _, envelopes in ready
        ]
        pending = [future for group in futures for future in group]
        if pending:
            _, late = await asyncio.wait(pending, timeout=self._publish_timeout)
            for future in late:
                future.cancel()
        for (message, event, _), group in zip(ready, futures, strict=True):
            failure = next((_failure(f) for f in group if _failure(f) is not None), None)
            if failure is None:
                await message.ack()
                duplicate = bool(group) and all(f.result().duplicate for f in group)
                self.counts[Outcome.DUPLICATE if duplicate else Outcome.PROCESSED] += 1
                continue
            delivered = message.metadata.num_delivered if message.metadata else 1
            delay = self._backoff[min(delivered - 1, len(self._backoff) - 1)]
            log.warning(
                "consumer %s: the copy of event %s was not published (delivery %d), again in %ss: %r",
                self.name,
                event.event_id,
                delivered,
                delay,
                failure,
            )
            await message.nak(delay=delay)
            self.counts[Outcome.RETRY] += 1

    async def handle(self, message: Msg) -> Outcome:
        """One message (as the platform's consumer's `handle`): its batch of one."""
        before = dict(self.counts)
        await self.handle_batch([message])
        return next(o for o in Outcome if self.counts[o] != before[o])


def _failure(future: asyncio.Future[Any]) -> BaseException | str | None:
    """Why a copy's publish did not succeed (cancelled: no acknowledgement in time), or None."""
    if future.cancelled():
        return "no acknowledgement in time"
    return future.exception()


def subscribe(
    bus: MessageBus, service: str, *, batch: int = 256, fetch_wait_seconds: float = 0.1, direct: bool = True
) -> None:
    """The consumers `<service>-report-tasking`, `-safeguarding`, `-pnd` and `-entity` (`direct`:
    DirectReporter; otherwise the platform's consumer, through the outbox)."""
    options: dict[str, Any] = {"batch": batch, "fetch_wait_seconds": fetch_wait_seconds}
    if direct:
        # Redelivered sooner than the platform's default: the stream is back when the broker is.
        options.update(consumer_class=DirectReporter, backoff_seconds=(0.5, 1, 2, 5, 10))
    for event_type in events.JOB_EVENTS:
        bus.on(f"{service}-report-tasking", event_type, on_event, **options)
    for event_type in events.REFERRAL_EVENTS:
        bus.on(f"{service}-report-safeguarding", event_type, on_event, **options)
    for event_type in (*events.PND_RESULTS, events.RECONCILIATION_COMPLETED):
        bus.on(f"{service}-report-pnd", event_type, on_event, **options)
    bus.on(f"{service}-report-entity", events.DECONFLICTION_NOTICE, on_event, **options)
