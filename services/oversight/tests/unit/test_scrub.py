"""What a region reports to the hub: each counted event type, every field set, comes out with
only its allowed fields (and the read model takes the same from it as from the original); a
field no allow-list names, or one unknown to the descriptor, is dropped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import region_pb2
from toex_common.events.consumer import PermanentError
from toex_common.events.envelope import IncomingEvent, build_event, decode
from toex_kernel.regions import Region
from toex_oversight.adapters import events, scrub
from toex_oversight.entrypoints import reporter

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
PERSONAL = "Jane Doe 07700900123 j.doe@example.invalid"
KEYS = {
    "job": "regions/EMSOU/jobs/j1",
    "linked_job": "regions/EMSOU/jobs/j1",
    "referral": "regions/EMSOU/referrals/r1",
    "reconciliation": "regions/EMSOU/reconciliations/c1",
    "event_id": "0190f0c2-7a00-7000-8000-000000000001",
}


def domain(message_type: type[Message]) -> str:
    return message_type.DESCRIPTOR.full_name.split(".")[1]


def fill(message: Message, depth: int = 0) -> None:
    """Every field of `message` set (one element of each repeated field), to three levels."""
    for field in message.DESCRIPTOR.fields:
        target: Any = message
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if depth > 3:
                continue
            child = getattr(target, field.name).add() if field.is_repeated else getattr(target, field.name)
            if field.message_type.full_name == "google.protobuf.Timestamp":
                child.seconds = int(T0.timestamp())
            elif field.message_type.full_name == "google.protobuf.Duration":
                child.seconds = 60
            else:
                fill(child, depth + 1)
            continue
        value = _value(field)
        if field.is_repeated:
            getattr(target, field.name).append(value)
        else:
            setattr(target, field.name, value)


def _value(field: FieldDescriptor) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        if field.enum_type.full_name == "toex.type.v1.Region":
            return region_pb2.REGION_LONDON
        return field.enum_type.values[-1].number
    if field.type == FieldDescriptor.TYPE_STRING:
        return KEYS.get(field.name, PERSONAL)
    if field.type == FieldDescriptor.TYPE_BOOL:
        return True
    if field.type == FieldDescriptor.TYPE_BYTES:
        return PERSONAL.encode()
    return 4  # every number: a rating 1-5 among them


def full(message_type: type[Message]) -> Message:
    message = message_type()
    fill(message)
    if message_type is events.RECONCILIATION_COMPLETED:
        message.summary.region = region_pb2.REGION_EMSOU  # type: ignore[attr-defined]
    return message


def set_paths(message: Message, prefix: str = "") -> Iterator[str]:
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            items = value if field.is_repeated else [value]
            found = False
            for item in items:
                for inner in set_paths(item, f"{path}."):
                    found = True
                    yield inner
            if not found:
                yield path
        else:
            yield path


def allowed_paths(allowed: scrub.Allowed, descriptor: Descriptor, prefix: str = "") -> Iterator[str]:
    for name, allowance in allowed.items():
        field = descriptor.fields_by_name[name]  # a misspelt allowance is a KeyError here
        if allowance is True:
            assert field.type != FieldDescriptor.TYPE_MESSAGE or field.message_type.full_name.startswith(
                "google.protobuf."
            ), f"{name}: a message is allowed field by field"
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                yield from (f"{prefix}{name}.{f.name}" for f in field.message_type.fields)
            else:
                yield f"{prefix}{name}"
        else:
            assert isinstance(allowance, dict)
            yield from allowed_paths(allowance, field.message_type, f"{prefix}{name}.")


def incoming(message: Message, region: Region = Region.EMSOU) -> IncomingEvent:
    envelope = build_event(
        message,
        domain=domain(type(message)),
        source="toex/test",
        region=region,
        occurred_at=T0,
        resource=PERSONAL,
    )
    return decode(envelope.subject, envelope.payload, envelope.headers)


def test_every_reported_type_and_only_those_have_an_allow_list() -> None:
    assert {t.DESCRIPTOR.full_name for t in scrub.REPORTED} == set(scrub.ALLOWED)


@pytest.mark.parametrize("message_type", scrub.REPORTED, ids=lambda t: t.DESCRIPTOR.name)
def test_a_full_event_comes_out_with_its_allowed_fields_only(message_type: type[Message]) -> None:
    original = full(message_type)
    copy = scrub.scrub(original)
    allowed = set(allowed_paths(scrub.ALLOWED[message_type.DESCRIPTOR.full_name], message_type.DESCRIPTOR))
    kept = set(set_paths(copy))
    assert kept <= allowed, kept - allowed
    # Everything allowed that the original had is kept; something was cleared.
    assert kept == set(set_paths(original)) & allowed
    assert set(set_paths(original)) - kept
    assert PERSONAL.encode() not in copy.SerializeToString()
    assert original.SerializeToString() != copy.SerializeToString()  # the original is untouched


@pytest.mark.parametrize("message_type", scrub.REPORTED, ids=lambda t: t.DESCRIPTOR.name)
def test_the_reported_copy_is_read_as_the_original_was(message_type: type[Message]) -> None:
    event = incoming(full(message_type))
    envelope = reporter.reported(event)
    assert envelope.subject == f"toex.emsou.oversight.{message_type.DESCRIPTOR.name}"
    assert envelope.event_id == event.event_id == envelope.headers["Nats-Msg-Id"]
    assert envelope.event_type == message_type.DESCRIPTOR.full_name
    assert "ce-subject" not in envelope.headers  # the resource may name a record
    assert PERSONAL.encode() not in envelope.payload
    assert PERSONAL not in str(envelope.headers)
    copy = decode(envelope.subject, envelope.payload, envelope.headers)
    assert copy.label_problem() is None
    assert events.occurred_at(copy) == events.occurred_at(event)
    if message_type in events.JOB_EVENTS:
        assert events.job_facts(copy) == events.job_facts(event)
    elif message_type in events.REFERRAL_EVENTS:
        assert events.referral_facts(copy) == events.referral_facts(event)
    elif message_type in events.PND_RESULTS:
        assert events.pnd_result(copy) == events.pnd_result(event)
    elif message_type is events.RECONCILIATION_COMPLETED:
        assert events.reconciliation(copy) == events.reconciliation(event)
    else:
        assert events.deconfliction_with(copy) == events.deconfliction_with(event) == "LONDON"


def test_a_field_no_allow_list_names_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    # As a field added to JobCreated later would be: the allow-list without `priority`.
    name = tasking_events.JobCreated.DESCRIPTOR.full_name
    narrower = {k: v for k, v in scrub.ALLOWED[name].items() if k != "priority"}
    monkeypatch.setitem(scrub.ALLOWED, name, narrower)
    copy: Any = scrub.scrub(
        tasking_events.JobCreated(job=KEYS["job"], priority=tasking_events.PRIORITY_URGENT)
    )
    assert copy.job == KEYS["job"]
    assert copy.priority == 0


def test_a_field_unknown_to_the_descriptor_is_dropped() -> None:
    # A newer producer's field 999 (a string), at the top and inside a kept message.
    extra = bytes([0xBA, 0x3E, len(PERSONAL)]) + PERSONAL.encode()
    message = tasking_events.JobCreated.FromString(
        tasking_events.JobCreated(job=KEYS["job"]).SerializeToString() + extra
    )
    message.access.MergeFromString(tasking_events.JobAccess(revision=2).SerializeToString() + extra)
    assert PERSONAL.encode() in message.SerializeToString()
    copy: Any = scrub.scrub(message)
    assert PERSONAL.encode() not in copy.SerializeToString()
    assert copy.job == KEYS["job"] and copy.access.revision == 2


def test_an_event_with_no_allow_list_is_not_reported() -> None:
    with pytest.raises(scrub.NotReported):
        scrub.scrub(tasking_events.JobAccess())
    event = incoming(full(tasking_events.JobCreated))
    other = IncomingEvent(
        event.event_id, event.subject, event.event_type, event.headers, tasking_events.JobAccess(), b""
    )
    with pytest.raises(PermanentError):
        reporter.reported(other)


@pytest.mark.parametrize("message_type", [entity_events.RelationRecorded, entity_events.MuleClusterDetected])
def test_relations_and_mule_clusters_never_reach_the_hub(message_type: type[Message]) -> None:
    """Who uses which phone or account, and who is in a mule cluster, are personal data of the
    region: neither event has an allow-list, so the reporter refuses it whole (dead-lettered,
    not forwarded), and no consumer of the reporter subscribes to it."""
    message = full(message_type)
    assert message.SerializeToString()
    assert message_type not in scrub.REPORTED
    with pytest.raises(scrub.NotReported):
        scrub.scrub(message)
    with pytest.raises(PermanentError):
        reporter.reported(incoming(message))
    subscribed: list[type[Message]] = []

    class Bus:
        def on(self, consumer: str, event_type: type[Message], handler: Any, **options: Any) -> None:
            subscribed.append(event_type)

    reporter.subscribe(Bus(), "oversight")  # type: ignore[arg-type]
    assert subscribed and message_type not in subscribed
