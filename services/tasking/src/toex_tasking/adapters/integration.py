"""Domain events -> integration events (toex.tasking.events.v2) in their envelopes.

The events own their shapes (no message of the tasking API inside); the enums share the API's
numbers, so the API's conversions serve both."""

from __future__ import annotations

from google.protobuf.message import Message
from toex.tasking.events.v2 import events_pb2 as ev
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import TASKING_STREAM

from toex_tasking.adapters.mapping import (
    force_to_proto,
    handling_to_proto,
    job_type_to_proto,
    priority_to_proto,
    state_to_proto,
    threat_to_proto,
    ts,
)
from toex_tasking.domain import events
from toex_tasking.domain.model import Assignee, Job

DOMAIN = "tasking"
SOURCE = "toex/tasking"
STREAM = TASKING_STREAM


def _assignee(assignee: Assignee) -> ev.Assignee:
    return ev.Assignee(
        username=assignee.username,
        region=assignee.region.to_proto(),  # type: ignore[arg-type]
        assign_time=ts(assignee.assigned_at),
    )


def access(job: Job) -> ev.JobAccess:
    """Who may work the job as stored by this change, which regions collaborate on it, and where
    it stands."""
    return ev.JobAccess(
        revision=job.revision,
        state=state_to_proto(job.state),  # type: ignore[arg-type]
        assignees=[_assignee(a) for a in job.assignees],
        collaborating_regions=[r.to_proto() for r in job.collaborating_regions],
    )


# JobChanges attributes -> the API's field names (the update mask's paths).
CHANGED_FIELDS = {
    "due_at": "due_time",
    "priority": "priority",
    "subject_entity_ids": "subject_entity_ids",
    "description": "description",
    "collaborating_regions": "collaborating_regions",
    "requesting_force": "requesting_force",
    "threat_category": "threat_category",
}


def to_message(job: Job, event: events.DomainEvent) -> Message:
    job_type = job_type_to_proto(job.job_type)
    if isinstance(event, events.JobCreated):
        return ev.JobCreated(
            job=job.name,
            job_type=job_type,  # type: ignore[arg-type]
            priority=priority_to_proto(job.priority),  # type: ignore[arg-type]
            operation_name=job.operation_name,
            requesting_unit=job.requesting_unit,
            due_time=ts(job.due_at),
            description=job.description,
            subject_entity_ids=job.subject_entity_ids,
            created_by=job.created_by,
            access=access(job),
            requesting_force=force_to_proto(job.requesting_force),  # type: ignore[arg-type]
            threat_category=threat_to_proto(job.threat_category),  # type: ignore[arg-type]
        )
    if isinstance(event, events.JobAssigned):
        return ev.JobAssigned(
            job=job.name,
            added=[_assignee(a) for a in event.added],
            assigned_by=event.by,
            job_type=job_type,  # type: ignore[arg-type]
            access=access(job),
        )
    if isinstance(event, events.JobReassigned):
        return ev.JobReassigned(
            job=job.name,
            previous=[_assignee(a) for a in event.previous],
            assignee=_assignee(event.assignee),
            reason=event.reason,
            reassigned_by=event.by,
            job_type=job_type,  # type: ignore[arg-type]
            access=access(job),
        )
    if isinstance(event, events.JobStatusChanged):
        return ev.JobStatusChanged(
            job=job.name,
            previous_state=state_to_proto(event.previous),  # type: ignore[arg-type]
            state=state_to_proto(event.state),  # type: ignore[arg-type]
            reason=event.reason,
            changed_by=event.by,
            job_type=job_type,  # type: ignore[arg-type]
            access=access(job),
        )
    if isinstance(event, events.JobUpdated):
        return ev.JobUpdated(
            job=job.name,
            changed_fields=[CHANGED_FIELDS[name] for name in event.changed],
            updated_by=event.by,
            access=access(job),
            # The values a read model without a copy of the job counts by (national oversight).
            priority=priority_to_proto(job.priority),  # type: ignore[arg-type]
            due_time=ts(job.due_at),
            requesting_force=force_to_proto(job.requesting_force),  # type: ignore[arg-type]
            threat_category=threat_to_proto(job.threat_category),  # type: ignore[arg-type]
        )
    if isinstance(event, events.JobOverdue):
        return ev.JobOverdue(
            job=job.name,
            due_time=ts(job.due_at),
            state=state_to_proto(job.state),  # type: ignore[arg-type]
            assignees=[_assignee(a) for a in job.assignees],
            priority=priority_to_proto(job.priority),  # type: ignore[arg-type]
        )
    if isinstance(event, events.FeedbackRecorded):
        assert job.feedback is not None
        feedback = job.feedback
        return ev.FeedbackRecorded(
            job=job.name,
            rating=feedback.rating,
            comment=feedback.comment,
            recorded_by=feedback.recorded_by,
            record_time=ts(feedback.recorded_at),
            has_comment=bool(feedback.comment),
        )
    if isinstance(event, events.FeedbackRequested):
        return ev.FeedbackRequested(
            job=job.name,
            token=event.token,
            expire_time=ts(event.expires_at),
            requesting_officer=job.requesting_officer,
            requesting_unit=job.requesting_unit,
            operation_name=job.operation_name,
        )
    raise TypeError(f"no integration event for {event!r}")


def envelope(job: Job, event: events.DomainEvent) -> EventEnvelope:
    return build_event(
        to_message(job, event),
        domain=DOMAIN,
        source=SOURCE,
        region=job.region,
        handling=handling_to_proto(job.handling),
        resource=job.name,
    )


def integration_events(job: Job, event: events.DomainEvent) -> list[EventEnvelope]:
    """The tasking service's one mapping of a domain event (what the unit of work publishes at
    commit)."""
    return [envelope(job, event)]
