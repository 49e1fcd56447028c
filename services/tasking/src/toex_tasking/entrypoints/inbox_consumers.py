"""NATS consumers of the inbox: each event that tells someone something becomes notices (what
it says, about which resource, to whom), delivered as items in the consumer's transaction.

One durable consumer per producer's stream, `<service>-inbox-<domain>`: tasking (its own
JobOverdue, JobAssigned, JobReassigned, FeedbackRecorded, read back from the stream like
everyone else's), entity (DeconflictionNotice), pnd (SubmissionRejected, SubmissionConflict)
and safeguarding (ReferralOverdue). Who gets what is domain/inbox.py's.

An item carries the region of the subject the event came on (what that region's NATS
permissions vouch for) and the event's handling code, and says no more than the event told that
region: codes, states, numbers, staff usernames and resource names, never free text that could
name a person (a feedback comment, a PND rejection's description, a reassignment's reason).
An event that names a resource of another region than its subject's is refused (dead-lettered).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.entity.v1 import entity_pb2
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import sync_pb2
from toex.safeguarding.events.v1 import events_pb2 as safeguarding_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex.type.v1 import region_pb2, security_pb2
from toex_common.events import IncomingEvent
from toex_common.events.bus import MessageBus, domain_of
from toex_common.events.consumer import Handler, PermanentError, region_of
from toex_kernel.clock import Clock, utcnow
from toex_kernel.regions import Region
from toex_kernel.timestamps import to_datetime

from toex_tasking.domain import commands, inbox
from toex_tasking.domain.inbox import ItemType, Notice, Recipient, Source
from toex_tasking.domain.model import Handling
from toex_tasking.service_layer import inbox as inbox_handlers
from toex_tasking.service_layer.ports import TaskingUnitOfWork

# Fields a PND answer would need to reach the people of the job it was made for: the job
# (`regions/{region}/jobs/{id}`) and who submitted it. SubmissionRejected and SubmissionConflict
# carry neither yet (toex.pnd.events.v1), so their items go to the region's supervisors; once the
# PND adds them under these names, the job's assignees (or the submitter) get them instead.
PND_JOB_FIELD = "job"
PND_SUBMITTER_FIELD = "submitted_by"

Translate = Callable[[Any, Region], tuple[Notice, ...]]


def _when(stamp: Timestamp) -> str:
    return to_datetime(stamp).strftime("%Y-%m-%d %H:%MZ") if stamp.seconds or stamp.nanos else "unknown"


def _enum(enum_type: Any, number: int, prefix: str) -> str:
    """`JOB_STATE_IN_PROGRESS` -> `in progress`."""
    try:
        name = enum_type.Name(number)
    except ValueError:
        return str(number)
    return name.removeprefix(prefix).replace("_", " ").lower()


def _of_region(name: str, region: Region, what: str) -> str:
    """`name` if it names a resource of `region`: an event of one region speaks of its own."""
    if not name.startswith(f"regions/{region.value}/"):
        raise PermanentError(f"a {what} of another region than the event's ({region.value}): {name!r}")
    return name


def _users(usernames: list[str]) -> tuple[Recipient, ...]:
    return tuple(Recipient.user(u) for u in dict.fromkeys(usernames) if u)


def _job_type(message: Any) -> str:
    return _enum(tasking_events.JobType, message.job_type, "JOB_TYPE_")


def job_overdue(message: tasking_events.JobOverdue, region: Region) -> tuple[Notice, ...]:
    summary = (
        f"Overdue since {_when(message.due_time)}: "
        f"{_enum(tasking_events.JobState, message.state, 'JOB_STATE_')}, "
        f"{_enum(tasking_events.Priority, message.priority, 'PRIORITY_')} priority"
    )
    job = _of_region(message.job, region, "job")
    return (Notice(ItemType.JOB_OVERDUE, summary, job, inbox.job_overdue(region)),)


def job_assigned(message: tasking_events.JobAssigned, region: Region) -> tuple[Notice, ...]:
    job = _of_region(message.job, region, "job")
    summary = f"Assigned to you ({_job_type(message)}) by {message.assigned_by}"
    return (Notice(ItemType.JOB_ASSIGNED, summary, job, _users([a.username for a in message.added])),)


def job_reassigned(message: tasking_events.JobReassigned, region: Region) -> tuple[Notice, ...]:
    job = _of_region(message.job, region, "job")
    new = message.assignee.username
    previous = [a.username for a in message.previous]
    notices = []
    if new and new not in previous:
        summary = f"Reassigned to you ({_job_type(message)}) by {message.reassigned_by}"
        notices.append(Notice(ItemType.JOB_ASSIGNED, summary, job, _users([new])))
    if taken_off := [p for p in previous if p != new]:
        summary = f"You were taken off this job ({_job_type(message)}): reassigned by {message.reassigned_by}"
        notices.append(Notice(ItemType.JOB_UNASSIGNED, summary, job, _users(taken_off)))
    return tuple(notices)


def feedback_recorded(message: tasking_events.FeedbackRecorded, region: Region) -> tuple[Notice, ...]:
    job = _of_region(message.job, region, "job")
    # The rating only: the officer's comment is free text (`toex jobs show` reads it, with a purpose).
    summary = f"Feedback recorded: rated {message.rating}/5 by {message.recorded_by}"
    return (Notice(ItemType.FEEDBACK_RECORDED, summary, job, job=job),)


def deconfliction_notice(message: entity_events.DeconflictionNotice, region: Region) -> tuple[Notice, ...]:
    other = _enum(region_pb2.Region, message.other_region, "REGION_").upper()
    kind = _enum(entity_pb2.RecordType, message.entity_type, "RECORD_TYPE_")
    summary = (
        f"{other} also holds records on this {kind}; contact: {message.contact_role or 'their supervisor'}"
    )
    # This copy is this region's (its subject's): its own deconfliction contact, and nobody else.
    return (
        Notice(
            ItemType.DECONFLICTION_NOTICE, summary, message.entity, (inbox.deconfliction_contact(region),)
        ),
    )


def _optional(message: Message, field: str) -> str:
    """A field the event type may not have (yet): its value, or ""."""
    return str(getattr(message, field)) if field in message.DESCRIPTOR.fields_by_name else ""


def _submission_notice(message: Any, region: Region, item_type: ItemType, summary: str) -> Notice:
    record = _of_region(message.record, region, "record")
    job = _optional(message, PND_JOB_FIELD)
    return Notice(
        item_type,
        summary,
        record,
        inbox.submission_answer(region, _optional(message, PND_SUBMITTER_FIELD)),
        job=_of_region(job, region, "job") if job else "",
    )


def _operation(message: Any) -> str:
    return _enum(sync_pb2.SubmissionOperation, message.operation, "SUBMISSION_OPERATION_")


def submission_rejected(message: pnd_events.SubmissionRejected, region: Region) -> tuple[Notice, ...]:
    # The reasons' codes: their descriptions may quote the record's values.
    codes = ", ".join(sorted({r.code for r in message.reasons if r.code})) or "no reason given"
    operation = _operation(message)
    summary = (
        f"The PND refused the {operation} of version {message.record_version} "
        f"(submission {message.submission_id}): {codes}"
    )
    return (_submission_notice(message, region, ItemType.PND_SUBMISSION_REJECTED, summary),)


def submission_conflict(message: pnd_events.SubmissionConflict, region: Region) -> tuple[Notice, ...]:
    operation = _operation(message)
    summary = (
        f"The PND holds version {message.pnd_version}, newer than version {message.record_version} "
        f"submitted ({operation}, submission {message.submission_id})"
    )
    return (_submission_notice(message, region, ItemType.PND_SUBMISSION_CONFLICT, summary),)


_ESCALATIONS = {
    sg.ESCALATION_SUPERVISOR: inbox.Escalation.SUPERVISOR,
    sg.ESCALATION_NATIONAL_COORDINATOR: inbox.Escalation.NATIONAL_COORDINATOR,
}
_ESCALATED_TO = {
    inbox.Escalation.NONE: "the region",
    inbox.Escalation.SUPERVISOR: "supervisors",
    inbox.Escalation.NATIONAL_COORDINATOR: "national coordinators",
}


def referral_overdue(message: safeguarding_events.ReferralOverdue, region: Region) -> tuple[Notice, ...]:
    referral = _of_region(message.referral, region, "referral")
    escalation = _ESCALATIONS.get(message.escalation, inbox.Escalation.NONE)
    parts = []
    if message.clock.kind:
        parts.append(
            f"{_enum(sg.ClockKind, message.clock.kind, 'CLOCK_KIND_')} due {_when(message.clock.due_time)}"
        )
    if message.risk_level:
        parts.append(f"risk {_enum(sg.RiskLevel, message.risk_level, 'RISK_LEVEL_')}")
    parts.append(f"escalated to {_ESCALATED_TO[escalation]}")
    summary = "Overdue: " + "; ".join(parts)
    return (Notice(ItemType.REFERRAL_OVERDUE, summary, referral, inbox.referral_overdue(region, escalation)),)


# What each event type tells, by the message types registered on the bus.
SOURCES: dict[type[Message], Translate] = {
    tasking_events.JobOverdue: job_overdue,
    tasking_events.JobAssigned: job_assigned,
    tasking_events.JobReassigned: job_reassigned,
    tasking_events.FeedbackRecorded: feedback_recorded,
    entity_events.DeconflictionNotice: deconfliction_notice,
    pnd_events.SubmissionRejected: submission_rejected,
    pnd_events.SubmissionConflict: submission_conflict,
    safeguarding_events.ReferralOverdue: referral_overdue,
}


def source_of(event: IncomingEvent) -> Source:
    """The event's id, type, time and label: the region its subject vouches for (the consumer
    base has refused a label that says otherwise) and its handling code (C unless it says P)."""
    message: Any = event.message
    if not message.HasField("occur_time"):
        raise PermanentError(f"{event.event_type} {event.event_id} has no occur_time")
    handling = Handling.P if message.label.handling == security_pb2.HANDLING_CODE_P else Handling.C
    return Source(
        event.event_id, event.event_type, to_datetime(message.occur_time), region_of(event), handling
    )


def make_handler(translate: Translate, clock: Clock = utcnow) -> Handler:
    async def handle(event: IncomingEvent, uow: TaskingUnitOfWork) -> None:
        source = source_of(event)
        notices = translate(event.message, source.region)
        await inbox_handlers.deliver(commands.DeliverNotices(source, notices), uow, clock())

    return handle


def consumer_name(service: str, message_type: type[Message]) -> str:
    """`<service>-inbox-<domain>`: one durable consumer per producer's stream."""
    return f"{service}-inbox-{domain_of(message_type)}"


def subscribe(bus: MessageBus, service: str, clock: Clock = utcnow) -> None:
    """The inbox's consumers on the bus."""
    for message_type, translate in SOURCES.items():
        bus.on(consumer_name(service, message_type), message_type, make_handler(translate, clock))
