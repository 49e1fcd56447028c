"""Domain objects <-> protobuf messages of toex.safeguarding.v1."""

from __future__ import annotations

import enum
from datetime import date, datetime
from typing import Any, TypeVar

from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.type.v1 import security_pb2
from toex_kernel.errors import InvalidArgument
from toex_kernel.timestamps import optional_timestamp as ts

from toex_safeguarding.domain.model import (
    Clock,
    Consent,
    Decision,
    DutyToNotify,
    Evidence,
    Progress,
    Referral,
    Subject,
)
from toex_safeguarding.domain.values import (
    AgeBand,
    ClockKind,
    Concern,
    ConsentStatus,
    DecisionKind,
    Destination,
    Escalation,
    EvidenceKind,
    Handling,
    Outcome,
    RiskLevel,
    State,
)

E = TypeVar("E", bound=enum.Enum)


def _to(enum_type: Any, prefix: str, value: enum.Enum) -> int:
    return int(enum_type.Value(f"{prefix}_{value.name}"))


def _from(enum_type: Any, prefix: str, cls: type[E], value: int) -> E | None:
    try:
        name = enum_type.Name(value)
    except ValueError:
        return None
    short = name.removeprefix(f"{prefix}_")
    if short == "UNSPECIFIED":
        return None
    return cls[short]


def concern_to_proto(value: Concern) -> int:
    return _to(pb.Concern, "CONCERN", value)


def concern_from_proto(value: int) -> Concern | None:
    return _from(pb.Concern, "CONCERN", Concern, value)


def destination_to_proto(value: Destination) -> int:
    return _to(pb.Destination, "DESTINATION", value)


def destination_from_proto(value: int) -> Destination | None:
    return _from(pb.Destination, "DESTINATION", Destination, value)


def state_to_proto(value: State) -> int:
    return _to(pb.ReferralState, "REFERRAL_STATE", value)


def state_from_proto(value: int) -> State | None:
    return _from(pb.ReferralState, "REFERRAL_STATE", State, value)


def risk_to_proto(value: RiskLevel) -> int:
    return 0 if value is RiskLevel.UNASSESSED else _to(pb.RiskLevel, "RISK_LEVEL", value)


def risk_from_proto(value: int) -> RiskLevel:
    return _from(pb.RiskLevel, "RISK_LEVEL", RiskLevel, value) or RiskLevel.UNASSESSED


def age_band_to_proto(value: AgeBand) -> int:
    return 0 if value is AgeBand.UNKNOWN else _to(pb.AgeBand, "AGE_BAND", value)


def age_band_from_proto(value: int) -> AgeBand:
    return _from(pb.AgeBand, "AGE_BAND", AgeBand, value) or AgeBand.UNKNOWN


def consent_to_proto(value: ConsentStatus) -> int:
    return 0 if value is ConsentStatus.NOT_RECORDED else _to(pb.ConsentStatus, "CONSENT_STATUS", value)


def consent_from_proto(value: int) -> ConsentStatus:
    return _from(pb.ConsentStatus, "CONSENT_STATUS", ConsentStatus, value) or ConsentStatus.NOT_RECORDED


def decision_kind_to_proto(value: DecisionKind) -> int:
    return _to(pb.DecisionKind, "DECISION_KIND", value)


def decision_kind_from_proto(value: int) -> DecisionKind | None:
    return _from(pb.DecisionKind, "DECISION_KIND", DecisionKind, value)


def outcome_to_proto(value: Outcome) -> int:
    return _to(pb.DecisionOutcome, "DECISION_OUTCOME", value)


def outcome_from_proto(value: int) -> Outcome | None:
    return _from(pb.DecisionOutcome, "DECISION_OUTCOME", Outcome, value)


def clock_kind_to_proto(value: ClockKind) -> int:
    return _to(pb.ClockKind, "CLOCK_KIND", value)


def escalation_to_proto(value: Escalation) -> int:
    return 0 if value is Escalation.NONE else _to(pb.Escalation, "ESCALATION", value)


def evidence_kind_to_proto(value: EvidenceKind) -> int:
    return _to(pb.EvidenceKind, "EVIDENCE_KIND", value)


def evidence_kind_from_proto(value: int) -> EvidenceKind | None:
    return _from(pb.EvidenceKind, "EVIDENCE_KIND", EvidenceKind, value)


def handling_to_proto(value: Handling) -> int:
    return security_pb2.HANDLING_CODE_P if value is Handling.P else security_pb2.HANDLING_CODE_C


def handling_from_proto(value: int) -> Handling:
    return Handling.P if value == security_pb2.HANDLING_CODE_P else Handling.C


def parse_date(text: str, field: str) -> date | None:
    if not text.strip():
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidArgument.field(field, "a date like 2009-04-30") from None


def evidence_to_proto(item: Evidence) -> pb.Evidence:
    return pb.Evidence(
        kind=evidence_kind_to_proto(item.kind),  # type: ignore[arg-type]
        ref=item.ref,
        description=item.description,
        added_by=item.added_by,
        add_time=ts(item.added_at),
    )


def evidence_from_proto(items: Any, field: str) -> list[Evidence]:
    found = []
    for index, item in enumerate(items):
        kind = evidence_kind_from_proto(item.kind)
        if kind is None:
            raise InvalidArgument.field(
                f"{field}[{index}].kind", "say what the evidence is (job, dataset, event)"
            )
        if not item.ref.strip():
            raise InvalidArgument.field(f"{field}[{index}].ref", "give the job, dataset or event reference")
        found.append(Evidence(kind, item.ref.strip(), item.description.strip()))
    return found


def subject_to_proto(subject: Subject) -> pb.Subject:
    return pb.Subject(
        entity_id=subject.entity_id,
        date_of_birth=subject.date_of_birth.isoformat() if subject.date_of_birth else "",
        age_band=age_band_to_proto(subject.age_band),  # type: ignore[arg-type]
        local_authority=subject.local_authority,
        consent=consent_msg(subject.consent),
    )


def consent_msg(consent: Consent) -> pb.Consent:
    return pb.Consent(
        status=consent_to_proto(consent.status),  # type: ignore[arg-type]
        recorded_by=consent.recorded_by,
        record_time=ts(consent.recorded_at),
    )


def decision_to_proto(decision: Decision) -> pb.Decision:
    return pb.Decision(
        kind=decision_kind_to_proto(decision.kind),  # type: ignore[arg-type]
        outcome=outcome_to_proto(decision.outcome),  # type: ignore[arg-type]
        detail=decision.detail,
        decision_time=ts(decision.decided_at),
        recorded_by=decision.recorded_by,
        record_time=ts(decision.recorded_at),
    )


def progress_to_proto(progress: Progress) -> pb.DestinationProgress:
    return pb.DestinationProgress(
        destination=destination_to_proto(progress.destination),  # type: ignore[arg-type]
        submit_time=ts(progress.submitted_at),
        agency_reference=progress.agency_reference,
        acknowledge_time=ts(progress.acknowledged_at),
        decisions=[decision_to_proto(d) for d in progress.decisions],
    )


def clock_to_proto(clock: Clock, now: datetime | None) -> pb.StatutoryClock:
    return pb.StatutoryClock(
        kind=clock_kind_to_proto(clock.kind),  # type: ignore[arg-type]
        destination=destination_to_proto(clock.destination),  # type: ignore[arg-type]
        start_time=ts(clock.started_at),
        due_time=ts(clock.due_at),
        not_before_time=ts(clock.not_before),
        satisfied_time=ts(clock.satisfied_at),
        overdue=clock.is_overdue(now) if now else False,
        escalation=escalation_to_proto(clock.escalation),  # type: ignore[arg-type]
        description=clock.description,
    )


def duty_to_notify_to_proto(notice: DutyToNotify) -> pb.DutyToNotify:
    return pb.DutyToNotify(
        reference=notice.reference,
        concerns=[concern_to_proto(c) for c in notice.concerns],  # type: ignore[misc]
        age_band=age_band_to_proto(notice.age_band),  # type: ignore[arg-type]
        first_responder=notice.first_responder.to_proto(),  # type: ignore[arg-type]
        create_time=ts(notice.created_at),
    )


def referral_to_proto(referral: Referral, *, now: datetime | None = None) -> pb.Referral:
    message = pb.Referral(
        name=referral.name,
        region=referral.region.to_proto(),  # type: ignore[arg-type]
        state=state_to_proto(referral.state),  # type: ignore[arg-type]
        subject=subject_to_proto(referral.subject),
        concerns=[concern_to_proto(c) for c in referral.concerns],  # type: ignore[misc]
        risk_level=risk_to_proto(referral.risk_level),  # type: ignore[arg-type]
        evidence=[evidence_to_proto(e) for e in referral.evidence],
        destinations=[destination_to_proto(d) for d in referral.destinations],  # type: ignore[misc]
        progress=[progress_to_proto(p) for p in referral.progress],
        clocks=[clock_to_proto(c, now) for c in referral.clocks],
        linked_job=referral.linked_job,
        handling=handling_to_proto(referral.handling),  # type: ignore[arg-type]
        submitted_for_approval_by=referral.submitted_for_approval_by,
        approved_by=referral.approved_by,
        approve_time=ts(referral.approved_at),
        return_reason=referral.return_reason,
        close_reason=referral.close_reason,
        created_by=referral.created_by,
        create_time=ts(referral.created_at),
        update_time=ts(referral.updated_at),
        overdue=referral.is_overdue(now) if now else False,
    )
    if now is not None:
        message.proposals.extend(
            pb.Proposal(destination=destination_to_proto(p.destination), reason=p.reason)  # type: ignore[arg-type]
            for p in referral.proposals(now)
        )
    if referral.duty_to_notify is not None:
        message.duty_to_notify.CopyFrom(duty_to_notify_to_proto(referral.duty_to_notify))
    return message
