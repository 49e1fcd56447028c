"""Domain objects and bulk-format JSON <-> protobuf messages of toex.pnd.v1."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pole_pb2, sync_pb2
from toex.type.v1 import security_pb2
from toex_kernel.timestamps import optional_timestamp as ts

from toex_pnd.domain.model import (
    Aged,
    Grading,
    IntelligenceRecord,
    Kind,
    Link,
    Operation,
    Reason,
    RegionFigures,
    Report,
    SearchRow,
    Submission,
    SubmissionState,
    SyncState,
)
from toex_pnd.service_layer.ports import ReportItem


def duration(seconds: float) -> Duration:
    span = Duration()
    span.FromTimedelta(timedelta(seconds=max(0.0, seconds)))
    return span


def _enum_suffix(enum: Any, value: int) -> str:
    return str(enum.Name(value)).rsplit("_", 1)[-1]


def kind_to_proto(kind: Kind) -> int:
    return int(pole_pb2.PoleKind.Value(f"POLE_KIND_{kind.value}"))


def kind_from_proto(value: int) -> Kind | None:
    name = pole_pb2.PoleKind.Name(value)  # type: ignore[arg-type]
    return None if name.endswith("UNSPECIFIED") else Kind(name.removeprefix("POLE_KIND_"))


def sync_state_to_proto(state: SyncState) -> int:
    return int(sync_pb2.SyncState.Value(f"SYNC_STATE_{state.value}"))


def sync_state_from_proto(value: int) -> SyncState | None:
    name = sync_pb2.SyncState.Name(value)  # type: ignore[arg-type]
    return None if name.endswith("UNSPECIFIED") else SyncState(name.removeprefix("SYNC_STATE_"))


def operation_to_proto(operation: Operation) -> int:
    return int(sync_pb2.SubmissionOperation.Value(f"SUBMISSION_OPERATION_{operation.value}"))


def submission_state_to_proto(state: SubmissionState) -> int:
    return int(pb.SubmissionState.Value(f"SUBMISSION_STATE_{state.value}"))


def handling_to_proto(handling: str) -> int:
    return security_pb2.HANDLING_CODE_P if handling == "P" else security_pb2.HANDLING_CODE_C


def grading_from_proto(grading: pole_pb2.Grading) -> dict[str, Any] | None:
    """To the bulk format's form; unset enums become empty strings (and fail the checks)."""
    if not grading.ByteSize():
        return None
    return {
        "source_evaluation": ""
        if not grading.source_evaluation
        else _enum_suffix(pole_pb2.SourceEvaluation, grading.source_evaluation),
        "intelligence_assessment": ""
        if not grading.intelligence_assessment
        else _enum_suffix(pole_pb2.IntelligenceAssessment, grading.intelligence_assessment),
        "handling": {security_pb2.HANDLING_CODE_P: "P", security_pb2.HANDLING_CODE_C: "C"}.get(
            grading.handling, ""
        ),
        "handling_conditions": grading.handling_conditions,
    }


def grading_to_proto(grading: dict[str, Any] | Grading) -> pole_pb2.Grading:
    data = grading.to_json() if isinstance(grading, Grading) else grading
    message = pole_pb2.Grading(handling_conditions=str(data.get("handling_conditions", "")))
    if data.get("source_evaluation") in ("1", "2", "3"):
        message.source_evaluation = pole_pb2.SourceEvaluation.Value(
            f"SOURCE_EVALUATION_{data['source_evaluation']}"
        )
    if data.get("intelligence_assessment") in ("A", "B", "C", "D", "E"):
        message.intelligence_assessment = pole_pb2.IntelligenceAssessment.Value(
            f"INTELLIGENCE_ASSESSMENT_{data['intelligence_assessment']}"
        )
    if data.get("handling") in ("P", "C"):
        message.handling = handling_to_proto(data["handling"])  # type: ignore[assignment]
    return message


def entity_from_proto(entity: pole_pb2.PoleEntity) -> dict[str, Any]:
    return json_format.MessageToDict(entity, preserving_proto_field_name=True)


def entity_to_proto(entity: dict[str, Any]) -> pole_pb2.PoleEntity:
    return json_format.ParseDict(entity, pole_pb2.PoleEntity(), ignore_unknown_fields=True)


def link_type_name(value: int) -> str:
    name = pole_pb2.LinkType.Name(value)  # type: ignore[arg-type]
    return "" if name.endswith("UNSPECIFIED") else name.removeprefix("LINK_TYPE_")


def links_from_proto(links: Any) -> list[dict[str, Any]]:
    return [
        {"target": link.target, "type": link_type_name(link.type), "description": link.description}
        for link in links
    ]


def link_to_proto(link: Link | dict[str, Any]) -> pole_pb2.PoleLink:
    data = link.to_json() if isinstance(link, Link) else link
    message = pole_pb2.PoleLink(
        target=str(data.get("target", "")), description=str(data.get("description", ""))
    )
    if data.get("type"):
        try:
            message.type = pole_pb2.LinkType.Value(f"LINK_TYPE_{data['type']}")
        except ValueError:
            pass
    return message


def reason_to_proto(reason: Reason) -> sync_pb2.RejectionReason:
    return sync_pb2.RejectionReason(code=reason.code, field=reason.field, description=reason.description)


def record_to_proto(record: IntelligenceRecord) -> pb.IntelligenceRecord:
    return pb.IntelligenceRecord(
        name=record.name,
        region=record.region.to_proto(),  # type: ignore[arg-type]
        kind=kind_to_proto(record.kind),  # type: ignore[arg-type]
        entity=entity_to_proto(record.entity),
        grading=grading_to_proto(record.grading),
        links=[link_to_proto(link) for link in record.links],
        version=record.version,
        sync_state=sync_state_to_proto(record.sync_state),  # type: ignore[arg-type]
        pnd_id=record.pnd_id,
        pnd_version=record.pnd_version,
        rejection_reasons=[reason_to_proto(r) for r in record.rejection],
        created_by=record.created_by,
        create_time=ts(record.created_at),
        update_time=ts(record.updated_at),
        delete_time=ts(record.deleted_at),
        released_by=record.released_by,
        job=record.job,
    )


def submission_to_proto(submission: Submission) -> pb.Submission:
    return pb.Submission(
        submission_id=submission.submission_id,
        record=submission.name,
        record_version=submission.version,
        operation=operation_to_proto(submission.operation),  # type: ignore[arg-type]
        state=submission_state_to_proto(submission.state),  # type: ignore[arg-type]
        attempts=submission.attempts,
        last_error=submission.last_error,
        queue_time=ts(submission.queued_at),
        next_attempt_time=ts(submission.next_attempt_at) if submission.state.open else None,
        answer_time=ts(submission.answered_at),
        reasons=[reason_to_proto(r) for r in submission.reasons],
        pnd_version=submission.pnd_version,
    )


def source_record_to_proto(data: dict[str, Any]) -> pole_pb2.PndSourceRecord:
    """One search result in the PND's JSON form as a source record."""
    record = pole_pb2.PndSourceRecord(
        source_record_id=str(data.get("source_record_id", "")),
        pnd_id=str(data.get("pnd_id", "")),
        pnd_version=int(data.get("pnd_version", 0)),
        entity=entity_to_proto(data.get("entity") or {}),
        grading=grading_to_proto(data.get("grading") or {}),
        originating_organisation=str(data.get("originating_organisation", "")),
        links=[link_to_proto(link) for link in data.get("links") or []],
    )
    try:
        record.kind = kind_to_proto(Kind(str(data.get("kind", ""))))  # type: ignore[assignment]
    except ValueError:
        pass
    if data.get("pnd_update_time"):
        record.pnd_update_time.FromDatetime(datetime.fromisoformat(str(data["pnd_update_time"])))
    return record


def aged_to_proto(aged: Aged) -> sync_pb2.AgedCount:
    return sync_pb2.AgedCount(
        count=aged.count, oldest_age=duration(aged.oldest_age_seconds), older_than_day=aged.older_than_day
    )


def figures_to_proto(figures: RegionFigures) -> sync_pb2.RegionReconciliation:
    return sync_pb2.RegionReconciliation(
        region=figures.region.to_proto(),  # type: ignore[arg-type]
        local_records=figures.local_records,
        in_sync=figures.in_sync,
        missing=aged_to_proto(figures.get("MISSING")),
        stale=aged_to_proto(figures.get("STALE")),
        rejected=aged_to_proto(figures.get("REJECTED")),
        held=aged_to_proto(figures.get("HELD")),
        conflict=aged_to_proto(figures.get("CONFLICT")),
    )


def report_to_proto(
    report: Report, figures: list[RegionFigures], *, whole: bool, caller: str
) -> pb.Reconciliation:
    """`whole`: the caller sees every region; otherwise only their region's figures, not the
    PND's national total or who (in which region) ran it, unless they did."""
    return pb.Reconciliation(
        name=report.name,
        scheduled=report.scheduled,
        requested_by=report.requested_by if whole or report.requested_by == caller else "",
        start_time=ts(report.started_at),
        complete_time=ts(report.completed_at),
        pnd_records=report.pnd_records if whole else 0,
        regions=[figures_to_proto(f) for f in figures],
    )


CATEGORIES = ("MISSING", "STALE", "REJECTED", "HELD", "CONFLICT")


def category_to_proto(category: str) -> int:
    return int(pb.ReconciliationCategory.Value(f"RECONCILIATION_CATEGORY_{category}"))


def category_from_proto(value: int) -> str | None:
    name = pb.ReconciliationCategory.Name(value)  # type: ignore[arg-type]
    return None if name.endswith("UNSPECIFIED") else name.removeprefix("RECONCILIATION_CATEGORY_")


def item_to_proto(item: ReportItem, at: datetime) -> pb.ReconciliationItem:
    return pb.ReconciliationItem(
        record=f"regions/{item.region.value}/intelligence/{item.record_id}",
        category=category_to_proto(item.category),  # type: ignore[arg-type]
        local_version=item.local_version,
        pnd_version=item.pnd_version,
        age=duration((at - item.changed_at).total_seconds()),
    )


def search_to_proto(row: SearchRow) -> sync_pb2.PndSearch:
    search = sync_pb2.PndSearch(
        name=f"regions/{row.region.value}/pndSearches/{row.id}",
        kind=sync_pb2.PndSearchKind.Value(f"PND_SEARCH_KIND_{row.kind}"),
        requested_by=row.requested_by,
        purpose=row.purpose,
        search_time=ts(row.searched_at),
        region=row.region.to_proto(),  # type: ignore[arg-type]
        job=row.job,
    )
    if row.kind == "PERSON":
        json_format.ParseDict(row.criteria, search.person, ignore_unknown_fields=True)
    elif row.kind == "PHONE":
        search.phone_e164 = str(row.criteria.get("phone_e164", ""))
    elif row.kind == "ONLINE_ACCOUNT":
        search.online_account = str(row.criteria.get("online_account", ""))
    else:
        search.vrm = str(row.criteria.get("vrm", ""))
    return search
