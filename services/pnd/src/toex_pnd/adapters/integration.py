"""Domain events -> integration events (toex.pnd.events.v1) in their envelopes: the service's
one mapping, the only place that knows the event messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from toex.pnd.events.v1 import events_pb2 as ev
from toex.type.v1 import security_pb2
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import PND_STREAM

from toex_pnd.adapters import mapping
from toex_pnd.domain import events
from toex_pnd.domain.model import (
    IntelligenceRecord,
    RegionFigures,
    Report,
    SearchRow,
    Submission,
    SubmissionState,
)

DOMAIN = "pnd"
SOURCE = "toex/pnd"
STREAM = PND_STREAM


def integration_events(record: IntelligenceRecord | None, event: events.DomainEvent) -> list[EventEnvelope]:
    """The PND sync service's one mapping of a domain event (what the unit of work publishes at
    commit). `record` is the record that recorded it; None for an event recorded on the unit of
    work."""
    if isinstance(event, events.SubmissionAnswered):
        assert record is not None
        return [_answer_event(record, event.submission)]
    if isinstance(event, events.SearchAnswered):
        return [_result_event(event.search, event.results)]
    if isinstance(event, events.ReconciliationCompleted):
        return [_reconciliation_event(event.report, event.figures)]
    raise TypeError(f"no integration event for {event!r}")


def _answer_event(record: IntelligenceRecord, submission: Submission) -> EventEnvelope:
    common: dict[str, Any] = {
        "record": submission.name,
        "record_version": submission.version,
        "submission_id": submission.submission_id,
        "operation": mapping.operation_to_proto(submission.operation),
        # Whom the answer concerns: the job's people, else whoever made the change.
        "job": record.job,
        "submitted_by": submission.submitted_by,
    }
    message: Any
    if submission.state is SubmissionState.ACCEPTED:
        message = ev.SubmissionAccepted(
            **common,
            pnd_id=record.pnd_id,
            kind=mapping.kind_to_proto(record.kind),  # type: ignore[arg-type]
        )
    elif submission.state is SubmissionState.REJECTED:
        message = ev.SubmissionRejected(
            **common, reasons=[mapping.reason_to_proto(r) for r in submission.reasons]
        )
    elif submission.state is SubmissionState.CONFLICT:
        message = ev.SubmissionConflict(**common, pnd_version=submission.pnd_version)
    else:
        raise ValueError(f"no event for a {submission.state} submission")
    return build_event(
        message,
        domain=DOMAIN,
        source=SOURCE,
        region=record.region,
        handling=mapping.handling_to_proto(record.grading.handling.value),
        resource=submission.name,
        occurred_at=submission.answered_at,
    )


def _reconciliation_event(report: Report, figures: RegionFigures) -> EventEnvelope:
    start = Timestamp()
    start.FromDatetime(report.started_at)
    return build_event(
        ev.ReconciliationCompleted(
            reconciliation=report.name,
            scheduled=report.scheduled,
            start_time=start,
            summary=mapping.figures_to_proto(figures),
        ),
        domain=DOMAIN,
        source=SOURCE,
        region=figures.region,
        handling=security_pb2.HANDLING_CODE_P,
        resource=report.name,
        occurred_at=report.completed_at,
    )


def _result_event(row: SearchRow, found: Sequence[dict[str, Any]]) -> EventEnvelope:
    search = mapping.search_to_proto(row)
    results = [mapping.source_record_to_proto(r) for r in found]
    all_p = bool(results) and all(r.grading.handling == security_pb2.HANDLING_CODE_P for r in results)
    return build_event(
        ev.PndResultReceived(search=search, results=results, truncated=row.truncated),
        domain=DOMAIN,
        source=SOURCE,
        region=row.region,
        handling=security_pb2.HANDLING_CODE_P if all_p else security_pb2.HANDLING_CODE_C,
        resource=search.name,
    )
