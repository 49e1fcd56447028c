from datetime import UTC, datetime

from toex.tasking.events.v1 import events_pb2
from toex.tasking.v1 import tasking_pb2
from toex.type.v1 import security_pb2
from toex_common.audit import GENESIS, entry_hash
from toex_common.events import build_event, decode
from toex_common.regions import Region


def test_event_envelope_carries_cloudevents_and_labels() -> None:
    message = events_pb2.JobCreated(job=tasking_pb2.Job(name="regions/EMSOU/jobs/1"))
    envelope = build_event(
        message,
        domain="tasking",
        source="toex/tasking",
        region=Region.EMSOU,
        handling=security_pb2.HANDLING_CODE_P,
        resource="regions/EMSOU/jobs/1",
    )
    assert envelope.subject == "toex.emsou.tasking.JobCreated"
    headers = envelope.headers
    assert headers["Nats-Msg-Id"] == headers["ce-id"] == envelope.event_id == message.event_id
    assert headers["ce-type"] == "toex.tasking.events.v1.JobCreated"
    assert headers["ce-specversion"] == "1.0"
    assert headers["ce-subject"] == "regions/EMSOU/jobs/1"
    assert headers["toex-region"] == "EMSOU"
    assert headers["toex-handling"] == "P"
    decoded = decode(envelope.subject, envelope.payload, headers)
    assert decoded.message == message
    assert decoded.message.label.region == Region.EMSOU.to_proto()


def test_unspecified_handling_is_treated_as_conditions() -> None:
    envelope = build_event(
        events_pb2.FeedbackRecorded(job="j"),
        domain="tasking",
        source="s",
        region=Region.ERSOU,
        handling=security_pb2.HANDLING_CODE_UNSPECIFIED,
    )
    assert envelope.headers["toex-handling"] == "C"


def test_audit_hash_depends_on_every_field_and_the_link() -> None:
    row = {
        "occurred_at": datetime(2026, 11, 22, tzinfo=UTC),
        "actor_subject": "s",
        "actor_username": "u",
        "actor_roles": ["researcher"],
        "actor_region": "EMSOU",
        "action": "/x/Get",
        "resources": ["r"],
        "purpose": "Op X",
        "outcome": "OK",
        "peer": "ipv4:127.0.0.1:1",
    }
    base = entry_hash(1, row, GENESIS)
    assert base == entry_hash(1, dict(row), GENESIS)
    for field, value in [("purpose", "Op Y"), ("outcome", "NOT_FOUND"), ("resources", ["other"])]:
        assert entry_hash(1, {**row, field: value}, GENESIS) != base
    assert entry_hash(2, row, GENESIS) != base
    assert entry_hash(1, row, "f" * 64) != base
