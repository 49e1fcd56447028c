import hashlib
import json
from datetime import UTC, datetime

import pytest
from opentelemetry import trace
from toex.tasking.events.v1 import events_pb2
from toex.tasking.v1 import tasking_pb2
from toex.type.v1 import security_pb2
from toex_common.audit import GENESIS, AuditEntry, chain_rows, entry_hash
from toex_common.events import build_event, decode
from toex_common.telemetry import consumer_span, inject
from toex_kernel.regions import Region


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


def _reference_hash(seq: int, row: dict, previous: str) -> str:
    """The hash as the audit log has always defined it: SHA-256 of the entry as JSON with sorted
    keys, no spaces, anything outside printable ASCII escaped. Stored chains depend on it."""
    fields = {
        **{k: row[k] for k in row if k != "occurred_at"},
        "occurred_at": row["occurred_at"].astimezone(UTC).isoformat(timespec="microseconds"),
        "seq": seq,
        "previous_hash": previous,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@pytest.mark.parametrize(
    "purpose",
    ["Op X", "Op Zoë", "Op \u7fa9", "tab\tnew\nline", "del\x7f", 'quote" and \\', "\U0001f600", "nul\x01"],
)
def test_audit_hash_is_the_one_stored_chains_were_written_with(purpose: str) -> None:
    row = {
        "occurred_at": datetime(2026, 11, 22, 9, 30, 1, 123456, tzinfo=UTC),
        "actor_subject": "s",
        "actor_username": "u",
        "actor_roles": ["researcher", "analyst"],
        "actor_region": "EMSOU",
        "action": "/x/Get",
        "resources": ["r", purpose],
        "purpose": purpose,
        "outcome": "OK",
        "peer": "ipv4:127.0.0.1:1",
    }
    assert entry_hash(7, row, "a" * 64) == _reference_hash(7, row, "a" * 64)


def test_chained_rows_carry_the_hash_of_their_own_text_and_link_in_order() -> None:
    entries = [AuditEntry(action="/x/Get", outcome="OK", purpose=p, resources=("r",)) for p in ("a", "Zoë")]
    text, (last_seq, last_hash) = chain_rows(entries, 41, GENESIS)
    rows = json.loads(text)
    assert [row["seq"] for row in rows] == [42, 43]
    assert rows[0]["previous_hash"] == GENESIS and rows[1]["previous_hash"] == rows[0]["entry_hash"]
    for row in rows:
        row["occurred_at"] = datetime.fromisoformat(row["occurred_at"])
        assert row["entry_hash"] == _reference_hash(
            row["seq"],
            {k: v for k, v in row.items() if k not in ("seq", "previous_hash", "entry_hash")},
            row["previous_hash"],
        )
    assert (last_seq, last_hash) == (43, rows[1]["entry_hash"])


def test_a_consumed_event_is_handled_in_the_trace_its_headers_carry() -> None:
    # No exporter is configured in the unit tests, so spans are not recorded.
    producer = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    tracer = trace.get_tracer("test")
    with consumer_span(tracer, "consume x", {"traceparent": producer}):
        published: dict[str, str] = {}
        inject(published)  # what an event the handler publishes carries
        assert trace.get_current_span().get_span_context().trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert published["traceparent"].split("-")[1] == "0af7651916cd43dd8448eb211c80319c"
    assert not trace.get_current_span().get_span_context().is_valid  # left as it was found
    with consumer_span(tracer, "consume y", {}):
        assert not trace.get_current_span().get_span_context().is_valid
