"""Event envelopes: protobuf payload plus CloudEvents NATS-binding headers.

Headers: Nats-Msg-Id (= event id, for JetStream de-duplication), ce-specversion, ce-id,
ce-source, ce-type (the protobuf full name), ce-time, ce-subject (the resource), content-type,
toex-region and toex-handling (the security label, fixed at creation), and W3C traceparent.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message
from toex.type.v1 import security_pb2

from toex_common.ids import new_uuid
from toex_common.regions import Region
from toex_common.telemetry import inject
from toex_common.timestamps import timestamp

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


@dataclass(frozen=True)
class IncomingEvent:
    event_id: str
    subject: str
    event_type: str
    headers: Mapping[str, str]
    message: Message | None
    raw: bytes

    @property
    def region(self) -> Region | None:
        """The region of the subject the event was published on: what the per-region NATS
        permissions let a publisher use, and so the only region a consumer trusts (the
        consumer base refuses an event whose header or payload label says otherwise)."""
        return subject_region(self.subject)

    def label_problem(self) -> str | None:
        """Why the event's security label cannot be trusted, or None: the subject's region,
        the toex-region header and the payload's label must all name the same region."""
        region = subject_region(self.subject)
        if region is None:
            return f"subject {self.subject!r} names no region"
        header = self.headers.get("toex-region")
        if header is not None and header.upper() != region.value:
            return f"toex-region header {header!r} differs from the subject's region {region.value}"
        label = getattr(self.message, "label", None) if self.message is not None else None
        if label is not None and label.region != region.to_proto():
            return f"payload label region {label.region} differs from the subject's region {region.value}"
        return None


def subject_region(subject: str) -> Region | None:
    """The region token of `toex.<region>.<domain>.<Event>`, or None."""
    parts = subject.split(".")
    if len(parts) < 3 or parts[0] != "toex":
        return None
    try:
        return Region.parse(parts[1])
    except ValueError:
        return None


def message_class(event_type: str) -> type[Message] | None:
    """Look up a generated class by full name. The module must have been imported."""
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(event_type)
    except KeyError:
        return None
    return message_factory.GetMessageClass(descriptor)


def decode(subject: str, data: bytes, headers: Mapping[str, str] | None) -> IncomingEvent:
    headers = dict(headers or {})
    event_type = headers.get("ce-type", "")
    cls = message_class(event_type) if event_type else None
    message: Any = None
    if cls is not None:
        message = cls()
        message.ParseFromString(data)
    event_id = headers.get("ce-id") or headers.get("Nats-Msg-Id") or ""
    return IncomingEvent(event_id, subject, event_type, headers, message, data)
