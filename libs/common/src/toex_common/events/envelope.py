"""Event envelopes: protobuf payload plus CloudEvents NATS-binding headers.

What arrives (IncomingEvent, decode) is toex_kernel.events, so the CLI reads events without
the runtime. Headers: Nats-Msg-Id (= event id, for JetStream de-duplication), ce-specversion, ce-id,
ce-source, ce-type (the protobuf full name), ce-time, ce-subject (the resource), content-type,
toex-region and toex-handling (the security label, fixed at creation), and W3C traceparent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf.message import Message
from toex.type.v1 import security_pb2
from toex_kernel.events import IncomingEvent, decode, message_class, subject_region
from toex_kernel.ids import new_uuid
from toex_kernel.regions import Region
from toex_kernel.timestamps import timestamp

from toex_common.telemetry import inject

__all__ = [
    "CONTENT_TYPE",
    "HANDLING_NAMES",
    "EventEnvelope",
    "IncomingEvent",
    "build_event",
    "decode",
    "message_class",
    "subject_for",
    "subject_region",
]

CONTENT_TYPE = "application/protobuf"
HANDLING_NAMES = {security_pb2.HANDLING_CODE_P: "P", security_pb2.HANDLING_CODE_C: "C"}


def subject_for(region: Region, domain: str, event_name: str) -> str:
    return f"toex.{region.token}.{domain}.{event_name}"


@dataclass(frozen=True)
class EventEnvelope:
    event_id: str
    subject: str
    event_type: str
    payload: bytes
    headers: dict[str, str]


def build_event(
    message: Message,
    *,
    domain: str,
    source: str,
    region: Region,
    handling: int = security_pb2.HANDLING_CODE_C,
    resource: str = "",
    occurred_at: datetime | None = None,
) -> EventEnvelope:
    """Fill the event's id, time and label (when the message has those fields) and wrap it.

    The label is set here, at creation, and never changed: consumers and the NATS account
    permissions rely on the region in the subject matching the region in the payload.
    """
    event_id = new_uuid()  # time-ordered: the outbox's and inboxes' indexes grow at one edge
    when = occurred_at or datetime.now(UTC)
    shape = _shape(type(message))
    target: Any = message
    if shape.event_id:
        if not target.event_id:
            target.event_id = event_id
        event_id = target.event_id
    if shape.occur_time:
        target.occur_time.CopyFrom(timestamp(when))
    if handling == security_pb2.HANDLING_CODE_UNSPECIFIED:
        handling = security_pb2.HANDLING_CODE_C
    if shape.label:
        target.label.region = region.to_proto()
        target.label.handling = handling
    headers = {
        "Nats-Msg-Id": event_id,
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-source": source,
        "ce-type": shape.full_name,
        "ce-time": when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "content-type": CONTENT_TYPE,
        "toex-region": region.value,
        "toex-handling": HANDLING_NAMES.get(handling, "C"),  # type: ignore[call-overload]
    }
    if resource:
        headers["ce-subject"] = resource
    inject(headers)
    return EventEnvelope(
        event_id=event_id,
        subject=subject_for(region, domain, shape.name),
        event_type=shape.full_name,
        payload=message.SerializeToString(),
        headers=headers,
    )


@dataclass(frozen=True)
class _Shape:
    """What build_event needs to know of an event message type, looked up once per type."""

    name: str
    full_name: str
    event_id: bool
    occur_time: bool
    label: bool


_shapes: dict[type[Message], _Shape] = {}


def _shape(message_type: type[Message]) -> _Shape:
    shape = _shapes.get(message_type)
    if shape is None:
        descriptor = message_type.DESCRIPTOR
        fields = descriptor.fields_by_name
        shape = _shapes[message_type] = _Shape(
            descriptor.name,
            descriptor.full_name,
            "event_id" in fields,
            "occur_time" in fields,
            "label" in fields,
        )
    return shape
