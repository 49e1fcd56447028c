"""Domain objects <-> protobuf messages of toex.tasking.v1."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import security_pb2
from toex_kernel import names
from toex_kernel.errors import Violations
from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.regions import Region
from toex_kernel.timestamps import optional_timestamp as ts

from toex_tasking.domain.model import Assignee, Feedback, Handling, Job, JobState, JobType, Note, Priority
from toex_tasking.domain.referrals import ChangeKind, LinkedReferral, ReferralChange

# Conversions are table lookups: the protobuf enum wrappers' Value/Name cost a microsecond or
# more each, and a job message takes several.
_STATES = {state: int(pb.JobState.Value(f"JOB_STATE_{state.value}")) for state in JobState}
_STATES_BACK = {number: state for state, number in _STATES.items()}
_JOB_TYPES = {kind: int(pb.JobType.Value(f"JOB_TYPE_{kind.value}")) for kind in JobType}
_JOB_TYPES_BACK = {number: kind for kind, number in _JOB_TYPES.items()}
_PRIORITIES = {priority: int(pb.Priority.Value(f"PRIORITY_{priority.value}")) for priority in Priority}
_PRIORITIES_BACK = {number: priority for priority, number in _PRIORITIES.items()}
_CHANGE_KINDS = {
    kind: int(pb.ReferralChangeKind.Value(f"REFERRAL_CHANGE_KIND_{kind.value}")) for kind in ChangeKind
}


JOB = "regions/{region}/jobs/{job}"


def job_ref(name: str, field: str = "name") -> tuple[Region, str]:
    """(region, job id) of a job's resource name; InvalidArgument naming `field` otherwise."""
    parts = names.parse(name, JOB, field)
    region = names.parse_region(parts["region"], field)
    assert region is not None
    return region, parts["job"]


def state_to_proto(state: JobState) -> int:
    return _STATES[state]


def state_from_proto(value: int) -> JobState | None:
    """The state, or None for JOB_STATE_UNSPECIFIED (or a number this version does not know)."""
    return _STATES_BACK.get(value)


def job_type_to_proto(value: JobType) -> int:
    return _JOB_TYPES[value]


def job_type_from_proto(value: int) -> JobType | None:
    return _JOB_TYPES_BACK.get(value)


def priority_to_proto(value: Priority) -> int:
    return _PRIORITIES[value]


def priority_from_proto(value: int) -> Priority:
    return _PRIORITIES_BACK.get(value, Priority.ROUTINE)


def handling_to_proto(value: Handling) -> int:
    return security_pb2.HANDLING_CODE_P if value is Handling.P else security_pb2.HANDLING_CODE_C


def handling_from_proto(value: int) -> Handling:
    return Handling.P if value == security_pb2.HANDLING_CODE_P else Handling.C


def regions_from_proto(values: Iterable[int], field: str, problems: Violations) -> list[Region]:
    """The regions of a repeated Region field; an unset or unknown value is a violation of
    `field[index]`."""
    regions = []
    for index, value in enumerate(values):
        try:
            regions.append(Region.from_proto(value))
        except ValueError:
            problems.add(f"{field}[{index}]", "choose a region")
    return regions


def force_from_proto(value: int, field: str, problems: Violations) -> Force | None:
    """The force of a Force field: None when unspecified; an unknown number is a violation."""
    if value == 0:
        return None
    try:
        return Force.from_proto(value)
    except ValueError:
        problems.add(field, f"unknown force {value}; see toex.type.v1.Force")
        return None


def threat_from_proto(value: int, field: str, problems: Violations) -> ThreatCategory | None:
    """The threat of a ThreatCategory field: None when unspecified; an unknown number is a violation."""
    if value == 0:
        return None
    try:
        return ThreatCategory.from_proto(value)
    except ValueError:
        problems.add(field, f"unknown threat category {value}; see toex.type.v1.ThreatCategory")
        return None


def force_to_proto(value: Force | None) -> int:
    return value.to_proto() if value else 0


def threat_to_proto(value: ThreatCategory | None) -> int:
    return value.to_proto() if value else 0


def assignee_to_proto(assignee: Assignee) -> pb.Assignee:
    return pb.Assignee(
        username=assignee.username,
        region=assignee.region.to_proto(),  # type: ignore[arg-type]
        assign_time=ts(assignee.assigned_at),
    )


def note_to_proto(job: Job, note: Note) -> pb.JobNote:
    return pb.JobNote(
        name=f"{job.name}/notes/{note.id}",
        author=note.author,
        text=note.text,
        create_time=ts(note.created_at),
    )


def feedback_to_proto(feedback: Feedback) -> pb.Feedback:
    return pb.Feedback(
        rating=feedback.rating,
        comment=feedback.comment,
        recorded_by=feedback.recorded_by,
        record_time=ts(feedback.recorded_at),
        officer_name=feedback.officer_name,
    )


def referral_change_to_proto(change: ReferralChange) -> pb.ReferralChange:
    return pb.ReferralChange(
        kind=_CHANGE_KINDS[change.kind],  # type: ignore[arg-type]
        state=change.state,
        actor=change.actor,
        summary=change.summary,
        occur_time=ts(change.occurred_at),
        event_id=change.event_id,
    )


def linked_referral_to_proto(linked: LinkedReferral, *, with_changes: bool = True) -> pb.LinkedReferral:
    return pb.LinkedReferral(
        referral=linked.referral,
        state=linked.state,
        concerns=linked.concerns,
        risk_level=linked.risk_level,
        handling=handling_to_proto(linked.handling),  # type: ignore[arg-type]
        update_time=ts(linked.updated_at),
        changes=[referral_change_to_proto(c) for c in linked.changes] if with_changes else [],
    )


def job_to_proto(job: Job, *, now: datetime | None = None, with_notes: bool = True) -> pb.Job:
    """The job as the API shows it; without `with_notes` (a list), without its notes and its
    linked referrals' changes."""
    message = pb.Job(
        name=job.name,
        requesting_unit=job.requesting_unit,
        requesting_officer=job.requesting_officer,
        operation_name=job.operation_name,
        owning_region=job.region.to_proto(),  # type: ignore[arg-type]
        job_type=job_type_to_proto(job.job_type),  # type: ignore[arg-type]
        priority=priority_to_proto(job.priority),  # type: ignore[arg-type]
        due_time=ts(job.due_at),
        description=job.description,
        assignees=[assignee_to_proto(a) for a in job.assignees],
        subject_entity_ids=job.subject_entity_ids,
        state=state_to_proto(job.state),  # type: ignore[arg-type]
        product=job.product,
        handling=handling_to_proto(job.handling),  # type: ignore[arg-type]
        created_by=job.created_by,
        create_time=ts(job.created_at),
        update_time=ts(job.updated_at),
        overdue=job.is_overdue(now) if now else False,
        collaborating_regions=[r.to_proto() for r in job.collaborating_regions],
        requesting_force=force_to_proto(job.requesting_force),  # type: ignore[arg-type]
        threat_category=threat_to_proto(job.threat_category),  # type: ignore[arg-type]
    )
    if with_notes:
        message.notes.extend(note_to_proto(job, n) for n in job.notes)
    if job.referral_changes:
        message.linked_referrals.extend(
            linked_referral_to_proto(r, with_changes=with_notes) for r in job.linked_referrals
        )
    if job.feedback is not None:
        message.feedback.CopyFrom(feedback_to_proto(job.feedback))
    return message
