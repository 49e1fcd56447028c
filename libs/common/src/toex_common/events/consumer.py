"""The idempotent consumer base.

For each message: in one transaction, claim the event id in the inbox (a duplicate hits the
primary key and is acknowledged as done), run the handler, commit; only then acknowledge.
A transient failure is `nak`ed with a growing delay; a permanent one, or one that keeps failing
until the maximum deliveries, is copied to the dead-letter stream and `term`inated.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import APIError, NotFoundError
from opentelemetry import trace
from toex_kernel.regions import Region

from toex_common.events.envelope import IncomingEvent, decode
from toex_common.events.streams import DEAD_LETTER, StreamSpec, ensure_stream
from toex_common.telemetry import consumer_span

log = logging.getLogger(__name__)

_tracer = trace.get_tracer(__name__)

# How long the fetch after a linger waits for the server's answer (see _rest_of_batch).
_REST_WAIT = 0.02


class InboxUnitOfWork(Protocol):
    """What the consumer needs of a unit of work (SqlAlchemyUnitOfWork and DriverUnitOfWork
    both are one): claim events in the inbox, in the transaction the handler then works in."""

    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def claim_events(self, consumer: str, events: Sequence[tuple[str, str]]) -> set[str]: ...
    async def commit(self) -> None: ...


def region_of(event: IncomingEvent) -> Region:
    """The region an event is for: its subject's, which the NATS permissions vouch for (the
    consumer base has already refused an event whose header or payload label says otherwise)."""
    region = event.region
    if region is None:
        raise PermanentError(f"subject {event.subject!r} names no region")
    return region


def _filters(config: ConsumerConfig) -> list[str]:
    """A consumer's filter subjects, however it was given them."""
    return sorted(config.filter_subjects or ([config.filter_subject] if config.filter_subject else []))


class TransientError(Exception):
    """Worth trying again later (a dependency is down)."""


class PermanentError(Exception):
    """Will never succeed (malformed or impossible event): dead-letter it now."""


class Outcome(enum.Enum):
    PROCESSED = "processed"
    DUPLICATE = "duplicate"
    RETRY = "retry"
    DEAD_LETTERED = "dead_lettered"


Handler = Callable[[IncomingEvent, Any], Awaitable[None]]
# Run once per fetched batch, in the batch's transaction, with the events claimed in it, before
# the handler runs for each: what every handler call would look up on its own (a row per
# event) is looked up once for the batch. It decides nothing; the handler still does.
Prefetch = Callable[[Sequence[IncomingEvent], Any], Awaitable[None]]


def check_event(event: IncomingEvent) -> None:
    """Refuse (PermanentError) an event no consumer may act on: one without an id, or one whose
    security label does not match its subject. A forged label (say ERSOU on an EMSOU subject)
    must never make another region's records: the subject is what NATS permissions vouch for."""
    if not event.event_id:
        raise PermanentError("event has no id (ce-id or Nats-Msg-Id header)")
    problem = event.label_problem()
    if problem is not None:
        raise PermanentError(f"security label refused: {problem}")


class IdempotentConsumer:
    def __init__(
        self,
        *,
        nc: Client,
        js: JetStreamContext,
        uow_factory: Callable[[], InboxUnitOfWork],
        name: str,
        stream: str | StreamSpec,
        subjects: Sequence[str],
        handler: Handler,
        max_deliver: int = 5,
        backoff_seconds: Sequence[float] = (1, 5, 30, 120),
        batch: int = 64,
        ack_wait_seconds: float = 30.0,
        deliver_new_only: bool = False,
        prefetch: Prefetch | None = None,
        fetch_wait_seconds: float = 1.0,
        linger_seconds: float = 0.0,
    ) -> None:
        self._nc = nc
        self._js = js
        self._uow_factory = uow_factory
        self.name = name
        # Given its specification, the consumer declares the producer's stream itself, so it can
        # bind even when it starts before the producer (declared exactly as the producer does).
        self._declare = stream if isinstance(stream, StreamSpec) else None
        self._stream = stream.name if isinstance(stream, StreamSpec) else stream
        self._subjects = list(subjects)
        self._handler = handler
        self._max_deliver = max_deliver
        self._backoff = list(backoff_seconds)
        self._batch = batch
        self._ack_wait = ack_wait_seconds
        self._deliver_new_only = deliver_new_only
        self._prefetch = prefetch
        # How long a fetch that found nothing waiting lingers for a batch to fill: also the
        # longest an event arriving at an idle consumer waits before it is taken (a batch that
        # fills first is taken at once; a backlog is taken without waiting).
        self._fetch_wait = fetch_wait_seconds
        # How long a batch that came back short is given to fill before it is handled: events
        # trickling in are then taken many to a transaction, not one or two (each transaction,
        # its inbox claim and its commit cost the same for one event as for fifty). A backlog
        # fills the batch at once and never waits; 0: take what came.
        self._linger = linger_seconds
        self.counts: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def consumer_config(self) -> ConsumerConfig:
        config = ConsumerConfig(
            durable_name=self.name,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self._ack_wait,
            max_deliver=self._max_deliver,
            max_ack_pending=max(1000, self._batch * 4),
            deliver_policy=DeliverPolicy.NEW if self._deliver_new_only else DeliverPolicy.ALL,
        )
        if len(self._subjects) == 1:
            config.filter_subject = self._subjects[0]
        else:
            config.filter_subjects = self._subjects
        return config

    async def setup(self) -> None:
        """Declare the dead-letter stream, the stream read (given its specification) and the
        durable consumer, or bring an existing durable to this configuration.

        An existing durable keeps its place in the stream: JetStream updates its filter subjects
        in place (an installation that now serves one region reads that region's events from
        where it was; one that now serves every region reads every region's from there, not
        those it passed). Where it started reading is fixed at creation and is kept. Should the
        server refuse the update (a setting it cannot change in place), the durable is replaced by
        one that starts after its acknowledged floor: nothing acknowledged is read again and
        nothing unacknowledged is lost (a redelivered event is a duplicate to the inbox)."""
        await ensure_stream(self._js, DEAD_LETTER)
        if self._declare is not None:
            await ensure_stream(self._js, self._declare)
        config = self.consumer_config()
        try:
            existing = await self._js.consumer_info(self._stream, self.name)
        except NotFoundError:
            await self._js.add_consumer(self._stream, config)
            return
        was = _filters(existing.config)
        if was != sorted(self._subjects):
            log.info(
                "consumer %s now reads %s (was %s)", self.name, ", ".join(self._subjects), ", ".join(was)
            )
        config.deliver_policy = existing.config.deliver_policy
        config.opt_start_seq = existing.config.opt_start_seq
        config.opt_start_time = existing.config.opt_start_time
        try:
            await self._js.add_consumer(self._stream, config)
        except APIError as exc:
            await self._replace(existing, config, exc)

    async def _replace(self, existing: ConsumerInfo, config: ConsumerConfig, refusal: APIError) -> None:
        start = (existing.ack_floor.stream_seq if existing.ack_floor else 0) + 1
        log.warning(
            "consumer %s cannot be updated in place (%s): replacing it, reading from stream sequence %d",
            self.name,
            refusal.description or refusal,
            start,
        )
        await self._js.delete_consumer(self._stream, self.name)
        config.deliver_policy = DeliverPolicy.BY_START_SEQUENCE
        config.opt_start_seq = start
        config.opt_start_time = None
        await self._js.add_consumer(self._stream, config)

    async def run(self, stop: asyncio.Event) -> None:
        await self.setup()
        subscription = await self._js.pull_subscribe_bind(durable=self.name, stream=self._stream)
        try:
            while not stop.is_set():
                try:
                    messages = await subscription.fetch(self._batch, timeout=self._fetch_wait)
                except (NatsTimeoutError, TimeoutError):
                    continue
                except Exception as exc:  # broker away: wait for the reconnect
                    log.warning("consumer %s fetch failed: %s", self.name, exc)
                    await asyncio.sleep(1.0)
                    continue
                if len(messages) < self._batch and self._linger > 0:
                    messages += await self._rest_of_batch(subscription, self._batch - len(messages))
                await self.handle_batch(messages)
        finally:
            await subscription.unsubscribe()

    async def _rest_of_batch(self, subscription: Any, wanted: int) -> list[Msg]:
        """What arrived for a short batch within the linger. The fetch after it takes what is
        there at once and waits for none that is not (a few milliseconds for the answer): an
        event alone is held for the linger, not twice. An answer later than that is not lost:
        its messages wait in the subscription for the next fetch."""
        await asyncio.sleep(self._linger)
        try:
            more: list[Msg] = await subscription.fetch(wanted, timeout=_REST_WAIT)
        except (NatsTimeoutError, TimeoutError):
            return []
        except Exception as exc:  # broker away: handle what came; the next fetch waits for it
            log.warning("consumer %s fetch failed: %s", self.name, exc)
            return []
        return more

    async def handle_batch(self, messages: list[Msg]) -> None:
        """Process a fetched batch in one transaction, then acknowledge every message.

        One commit for the whole batch is what makes the consumer keep up with the stream. If
        anything in the batch fails, the transaction is rolled back and the messages are taken
        one at a time, so one bad event cannot hold back or poison the others. An event the
        batch holds twice (published again under a new message id) is handled once: the later
        copy is a duplicate, as the inbox would find it in a later batch."""
        if len(messages) > 1 and all(m.metadata and m.metadata.num_delivered == 1 for m in messages):
            events = [decode(m.subject, m.data, m.headers) for m in messages]
            if all(e.event_id and e.label_problem() is None for e in events):
                first: dict[str, IncomingEvent] = {}
                for event in events:
                    first.setdefault(event.event_id, event)
                once = list(first.values())
                try:
                    processed, duplicates = await self._process_batch(once)
                    duplicates += len(events) - len(once)
                except Exception as exc:
                    log.info(
                        "consumer %s: batch of %d failed (%r); retrying one by one",
                        self.name,
                        len(events),
                        exc,
                    )
                else:
                    for message in messages:
                        await message.ack()
                    self.counts[Outcome.PROCESSED] += processed
                    self.counts[Outcome.DUPLICATE] += duplicates
                    return
        for message in messages:
            await self.handle(message)

    async def _process_batch(self, events: list[IncomingEvent]) -> tuple[int, int]:
        async with self._uow_factory() as uow:
            fresh = await uow.claim_events(self.name, [(e.event_id, e.subject) for e in events])
            claimed = [e for e in events if e.event_id in fresh]
            if self._prefetch is not None and claimed:
                await self._prefetch(claimed, uow)
            for event in claimed:
                with consumer_span(_tracer, f"consume {event.event_type or event.subject}", event.headers):
                    await self._handler(event, uow)
            await uow.commit()
        return len(fresh), len(events) - len(fresh)

    async def handle(self, message: Msg) -> Outcome:
        event = decode(message.subject, message.data, message.headers)
        delivered = message.metadata.num_delivered if message.metadata else 1
        outcome = Outcome.RETRY
        with consumer_span(_tracer, f"consume {event.event_type or message.subject}", event.headers):
            try:
                check_event(event)
                outcome = await self._process(event)
                await message.ack()
            except PermanentError as exc:
                outcome = await self._dead_letter(message, event, f"permanent: {exc}")
            except Exception as exc:
                if delivered >= self._max_deliver:
                    outcome = await self._dead_letter(
                        message, event, f"gave up after {delivered} deliveries: {exc!r}"
                    )
                else:
                    delay = self._backoff[min(delivered - 1, len(self._backoff) - 1)]
                    log.warning(
                        "consumer %s: event %s failed (delivery %d), retry in %ss: %r",
                        self.name,
                        event.event_id,
                        delivered,
                        delay,
                        exc,
                    )
                    await message.nak(delay=delay)
                    outcome = Outcome.RETRY
        self.counts[outcome] += 1
        return outcome

    async def _process(self, event: IncomingEvent) -> Outcome:
        async with self._uow_factory() as uow:
            if not await uow.claim_events(self.name, [(event.event_id, event.subject)]):
                return Outcome.DUPLICATE
            await self._handler(event, uow)
            await uow.commit()
            return Outcome.PROCESSED

    async def _dead_letter(self, message: Msg, event: IncomingEvent, reason: str) -> Outcome:
        # The subject's region, never the (forgeable) header: a dead letter stays where the
        # event was published, under that region's permissions.
        region = (event.region or Region.NATIONAL).token
        headers = {k: v for k, v in (message.headers or {}).items()}
        headers.update(
            {
                "Nats-Msg-Id": f"{event.event_id or message.reply}:{self.name}",
                "toex-dead-reason": reason[:1000],
                "toex-dead-consumer": self.name,
                "toex-original-subject": message.subject,
            }
        )
        subject = f"toex.{region}.deadletter.{self.name}"
        log.error(
            "consumer %s: dead-lettering event %s to %s: %s", self.name, event.event_id, subject, reason
        )
        await self._js.publish(subject, message.data, headers=headers)
        await message.term()
        return Outcome.DEAD_LETTERED
