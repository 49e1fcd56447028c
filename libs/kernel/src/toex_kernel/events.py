"""An event as it arrives: decoded from a NATS message's bytes and CloudEvents headers, with the
region the subject vouches for. Building and publishing events is toex_common's."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from google.protobuf import descriptor_pool, message_factory
from google.protobuf.message import Message

from toex_kernel.regions import Region


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


@lru_cache(maxsize=4096)
def subject_region(subject: str) -> Region | None:
    """The region token of `toex.<region>.<domain>.<Event>`, or None. Asked several times for
    every event a consumer takes, of a few dozen subjects: remembered."""
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
