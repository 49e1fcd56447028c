"""Integration events of the PND sync service (toex.pnd.events.v1) in their envelopes."""

from __future__ import annotations

from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from toex.pnd.events.v1 import events_pb2 as ev
from toex.type.v1 import security_pb2
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import PND_STREAM

from toex_pnd.adapters import mapping
from toex_pnd.domain.model import IntelligenceRecord, Submission, SubmissionState
from toex_pnd.service_layer.ports import RegionFigures, Report, SearchRow

DOMAIN = "pnd"
SOURCE = "toex/pnd"
STREAM = PND_STREAM


def answer_event(record: IntelligenceRecord, submission: Submission) -> EventEnvelope:
    common: dict[str, Any] = {
        "record": submission.name,
        "record_version": submission.version,
        "submission_id": submission.submission_id,
        "operation": mapping.operation_to_proto(submission.operation),
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


def reconciliation_event(report: Report, figures: RegionFigures) -> EventEnvelope:
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


def result_event(row: SearchRow, found: list[dict[str, Any]], truncated: bool) -> EventEnvelope:
    search = mapping.search_to_proto(row)
    results = [mapping.source_record_to_proto(r) for r in found]
    all_p = bool(results) and all(r.grading.handling == security_pb2.HANDLING_CODE_P for r in results)
    return build_event(
        ev.PndResultReceived(search=search, results=results, truncated=truncated),
        domain=DOMAIN,
        source=SOURCE,
        region=row.region,
        handling=security_pb2.HANDLING_CODE_P if all_p else security_pb2.HANDLING_CODE_C,
        resource=search.name,
    )
