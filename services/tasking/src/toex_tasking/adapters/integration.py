"""Domain events -> integration events (toex.tasking.events.v1) in their envelopes."""

from __future__ import annotations

from google.protobuf.message import Message
from toex.tasking.events.v1 import events_pb2 as ev
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import TASKING_STREAM

from toex_tasking.adapters.mapping import (
    assignee_to_proto,
    feedback_to_proto,
    handling_to_proto,
    job_to_proto,
    job_type_to_proto,
    priority_to_proto,
    state_to_proto,
    ts,
)
from toex_tasking.domain import events
from toex_tasking.domain.model import Job

DOMAIN = "tasking"
SOURCE = "toex/tasking"
STREAM = TASKING_STREAM


def to_message(job: Job, event: events.DomainEvent) -> Message:
    if isinstance(event, events.JobCreated):
        return ev.JobCreated(job=job_to_proto(job, with_notes=False))
    if isinstance(event, events.JobAssigned):
        return ev.JobAssigned(
            job=job.name,
            added=[assignee_to_proto(a) for a in event.added],
            assigned_by=event.by,
            job_type=job_type_to_proto(job.job_type),  # type: ignore[arg-type]
        )
    if isinstance(event, events.JobReassigned):
        return ev.JobReassigned(
            job=job.name,
            previous=[assignee_to_proto(a) for a in event.previous],
            assignee=assignee_to_proto(event.assignee),
            reason=event.reason,
            reassigned_by=event.by,
        )
    if isinstance(event, events.JobStatusChanged):
        return ev.JobStatusChanged(
            job=job.name,
            previous_state=state_to_proto(event.previous),  # type: ignore[arg-type]
            state=state_to_proto(event.state),  # type: ignore[arg-type]
            reason=event.reason,
            changed_by=event.by,
            job_type=job_type_to_proto(job.job_type),  # type: ignore[arg-type]
        )
    if isinstance(event, events.JobOverdue):
        return ev.JobOverdue(
            job=job.name,
            due_time=ts(job.due_at),
            state=state_to_proto(job.state),  # type: ignore[arg-type]
            assignees=[assignee_to_proto(a) for a in job.assignees],
            priority=priority_to_proto(job.priority),  # type: ignore[arg-type]
        )
    if isinstance(event, events.FeedbackRecorded):
        assert job.feedback is not None
        return ev.FeedbackRecorded(job=job.name, feedback=feedback_to_proto(job.feedback))
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
