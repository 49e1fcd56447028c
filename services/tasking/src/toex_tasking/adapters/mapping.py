"""Domain objects <-> protobuf messages of toex.tasking.v1."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import security_pb2

from toex_tasking.domain.model import Assignee, Feedback, Handling, Job, JobState, JobType, Note, Priority


def ts(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    stamp = Timestamp()
    stamp.FromDatetime(value)
    return stamp


def state_to_proto(state: JobState) -> int:
    return int(pb.JobState.Value(f"JOB_STATE_{state.value}"))


def state_from_proto(value: int) -> JobState | None:
    name = pb.JobState.Name(value)  # type: ignore[arg-type]
    return None if name == "JOB_STATE_UNSPECIFIED" else JobState(name.removeprefix("JOB_STATE_"))


def job_type_to_proto(value: JobType) -> int:
    return int(pb.JobType.Value(f"JOB_TYPE_{value.value}"))


def job_type_from_proto(value: int) -> JobType | None:
    name = pb.JobType.Name(value)  # type: ignore[arg-type]
    return None if name == "JOB_TYPE_UNSPECIFIED" else JobType(name.removeprefix("JOB_TYPE_"))


def priority_to_proto(value: Priority) -> int:
    return int(pb.Priority.Value(f"PRIORITY_{value.value}"))


def priority_from_proto(value: int) -> Priority:
    name = pb.Priority.Name(value)  # type: ignore[arg-type]
    return Priority.ROUTINE if name == "PRIORITY_UNSPECIFIED" else Priority(name.removeprefix("PRIORITY_"))


def handling_to_proto(value: Handling) -> int:
    return security_pb2.HANDLING_CODE_P if value is Handling.P else security_pb2.HANDLING_CODE_C


def handling_from_proto(value: int) -> Handling:
    return Handling.P if value == security_pb2.HANDLING_CODE_P else Handling.C


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
    )


def job_to_proto(job: Job, *, now: datetime | None = None, with_notes: bool = True) -> pb.Job:
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
    )
    if with_notes:
        message.notes.extend(note_to_proto(job, n) for n in job.notes)
    if job.feedback is not None:
        message.feedback.CopyFrom(feedback_to_proto(job.feedback))
    return message
