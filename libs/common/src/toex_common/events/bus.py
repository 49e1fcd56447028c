"""The message bus: a service's consumers are handlers registered by event type.

A service says what it handles, and under which durable consumer:

    bus = MessageBus()
    bus.on("entity-tasking-subjects", tasking_events.JobCreated, on_job_created)
    bus.on("entity-pnd-results", pnd_events.PndResultReceived, on_pnd_result)

and the platform does the rest: the subject of each event type (`toex.<scope>.<domain>.<Name>`,
the domain from the message's protobuf package), the producer's stream to bind to (declared
once in `streams`, and by the consumer at setup if the producer has not started yet), one idempotent consumer per name (inbox, batches, retries, dead letters),
and dispatch by the event's type. An event of a type no handler of that consumer takes is a
permanent error, dead-lettered with the consumer's name; a handler can rely on
`event.message` being of the type it registered for.

A handler that looks something up for each event can register a `prefetch` beside it: run once
per fetched batch with the batch's events of its type, it looks up for all of them at once what
the handler calls then find without a round trip each (`IdempotentConsumer`'s `prefetch`).

The name is the durable consumer's and the inbox's key: keep it when handlers move, or the
stream is read again from its start under a new name (the inbox of the old name would not
know those events).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.message import Message

from toex_common.events.consumer import (
    Handler,
    IdempotentConsumer,
    InboxUnitOfWork,
    PermanentError,
    Prefetch,
)
from toex_common.events.envelope import IncomingEvent
from toex_common.events.streams import STREAMS, StreamSpec

# Every region's subjects: a single installation serving every region consumes them all.
EVERY_REGION = "*"


def domain_of(message_type: type[Message]) -> str:
    """The publishing service's domain: `toex.<domain>.events.vN.<Name>` -> `<domain>`."""
    parts = message_type.DESCRIPTOR.full_name.split(".")
    if len(parts) < 4 or parts[0] != "toex" or parts[2] != "events":
        raise ValueError(f"{message_type.DESCRIPTOR.full_name} is not a toex integration event")
    return parts[1]


def subject_of(message_type: type[Message], scope: str = EVERY_REGION, domain: str | None = None) -> str:
    """The subject its producer publishes it on, for the regions `scope` matches (`domain`: the
    subjects it is republished on under another domain, e.g. oversight's reported copies)."""
    return f"toex.{scope}.{domain or domain_of(message_type)}.{message_type.DESCRIPTOR.name}"


@dataclass
class _Subscription:
    name: str
    stream: StreamSpec
    handlers: dict[str, Handler] = field(default_factory=dict)
    prefetches: dict[str, Prefetch] = field(default_factory=dict)
    subjects: list[str] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


class MessageBus:
    def __init__(self) -> None:
        self._subscriptions: dict[str, _Subscription] = {}

    def on(
        self,
        consumer: str,
        event: type[Message],
        handler: Handler,
        *,
        prefetch: Prefetch | None = None,
        domain: str | None = None,
        **options: Any,
    ) -> None:
        """Run `handler(event, uow)` for every `event` published, under durable consumer
        `consumer`, in the consumer's transaction. One consumer reads one producer's stream;
        `options` go to its IdempotentConsumer (batch, max_deliver, ...). `prefetch(events,
        uow)`, if given, runs first for each fetched batch's events of this type. `domain`, if
        given, reads the event type as republished on `toex.<region>.<domain>.<Name>` (and that
        domain's stream) rather than from its producer's."""
        stream = STREAMS[domain or domain_of(event)]
        subscription = self._subscriptions.setdefault(consumer, _Subscription(consumer, stream))
        if subscription.stream != stream:
            raise ValueError(
                f"consumer {consumer} reads {subscription.stream.name}; "
                f"{event.DESCRIPTOR.full_name} is on {stream.name}: give it a consumer of its own"
            )
        full_name = event.DESCRIPTOR.full_name
        if full_name in subscription.handlers:
            raise ValueError(f"consumer {consumer} already handles {full_name}")
        subscription.handlers[full_name] = handler
        if prefetch is not None:
            subscription.prefetches[full_name] = prefetch
        subject = subject_of(event, domain=domain)
        if subject not in subscription.subjects:
            subscription.subjects.append(subject)
        subscription.options.update(options)

    @property
    def names(self) -> list[str]:
        return list(self._subscriptions)

    def streams(self) -> list[StreamSpec]:
        """The producers' streams this service reads (each consumer declares its own at setup,
        so it can bind even when this service starts before the producer)."""
        found: list[StreamSpec] = []
        for subscription in self._subscriptions.values():
            if subscription.stream not in found:
                found.append(subscription.stream)
        return found

    def subjects(self, consumer: str, scope: str = EVERY_REGION) -> list[str]:
        return [
            subject.replace(f"toex.{EVERY_REGION}.", f"toex.{scope}.", 1)
            for subject in self._subscriptions[consumer].subjects
        ]

    def dispatcher(self, consumer: str) -> Handler:
        """The one handler the consumer runs: the registered handler of the event's type."""
        handlers = self._subscriptions[consumer].handlers

        async def dispatch(event: IncomingEvent, uow: Any) -> None:
            handler = handlers.get(event.event_type)
            if handler is None or event.message is None:
                raise PermanentError(
                    f"consumer {consumer} handles {', '.join(sorted(handlers))}; "
                    f"got {event.event_type or 'an untyped event'}"
                    + ("" if handler is None else " it could not decode")
                )
            await handler(event, uow)

        return dispatch

    def prefetcher(self, consumer: str) -> Prefetch | None:
        """The consumer's batch prefetch: each registered prefetch with the batch's events of
        its type (in the batch's order); None when no handler of the consumer has one."""
        prefetches = self._subscriptions[consumer].prefetches
        if not prefetches:
            return None

        async def prefetch(events: Sequence[IncomingEvent], uow: Any) -> None:
            by_type: dict[str, list[IncomingEvent]] = {}
            for event in events:
                if event.event_type in prefetches and event.message is not None:
                    by_type.setdefault(event.event_type, []).append(event)
            for event_type, found in by_type.items():
                await prefetches[event_type](found, uow)

        return prefetch

    def consumers(
        self,
        make: Callable[..., IdempotentConsumer],
        uow_factory: Callable[[], InboxUnitOfWork],
        *,
        scope: str | None = None,
    ) -> list[IdempotentConsumer]:
        """One idempotent consumer per registered name, built with `make` (Platform.consumer).

        `scope`: by default the regions the installation serves (`toex.*.<domain>...`, which
        Platform.consumer narrows to the installation's region: toex_common.installation);
        EVERY_REGION for every region's wherever it runs, a read model of every region at the
        hub (`make` is told `every_region=True`); a region's token for that region's."""
        every = {"every_region": True} if scope == EVERY_REGION else {}
        built = []
        for name, subscription in self._subscriptions.items():
            prefetch = self.prefetcher(name)
            built.append(
                make(
                    uow_factory=uow_factory,
                    name=name,
                    stream=subscription.stream,
                    subjects=self.subjects(name, scope or EVERY_REGION),
                    handler=self.dispatcher(name),
                    **every,
                    **({"prefetch": prefetch} if prefetch is not None else {}),
                    **subscription.options,
                )
            )
        return built
