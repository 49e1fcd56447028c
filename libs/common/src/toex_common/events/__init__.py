"""Integration events: envelopes, stream definitions, the outbox relay and the idempotent consumer."""

from toex_common.events.envelope import (
    CONTENT_TYPE,
    EventEnvelope,
    IncomingEvent,
    build_event,
    decode,
    subject_for,
)
from toex_common.events.streams import StreamSpec, ensure_stream

__all__ = [
    "CONTENT_TYPE",
    "EventEnvelope",
    "IncomingEvent",
    "StreamSpec",
    "build_event",
    "decode",
    "ensure_stream",
    "subject_for",
]
