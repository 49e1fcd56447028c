"""NATS consumers: what other services tell tasking by event.

- safeguarding's referral events (`ReferralDrafted`, `ReferralEvidenceAdded`,
  `ReferralApproved`, `ReferralReturned`, `ReferralSubmitted`, `ReferralOverdue`,
  `ReferralDecisionRecorded`, `ReferralClosed`; consumer `<service>-referral-outcomes`): each
  event of a referral linked to a job (`linked_job`) is kept as a change of the referral on
  that job, and the job shows the referral as its latest change says (domain/referrals.py).
  Only on a job of the region whose subject the event came on (what that region's NATS
  permissions vouch for), as the safeguarding service acting in that region: an event naming
  another region's job, another region's referral, or a job the region does not hold is
  refused, dead-lettered under the subject's region and never shown. An event linked to no job
  is passed over.
- safeguarding `JobNoteRequested` (consumer `<service>-job-notes`): the notes the safeguarding
  service asked for before its referral events were shown on the job. It publishes no more of
  them; the consumer stays for one release, to drain those still in the stream, and is then
  removed. A note is written only on a job of the event's region, as for the events above.

Run through the idempotent consumer base: the event's id is claimed in the inbox in the
transaction that stores the change (or the note), and the event id (the note id) makes an event
published twice one change (one note). Each one stored has an audit entry, as a call would: the
safeguarding service acting in the region as the actor, the referral as the purpose.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from toex.safeguarding.events.v1 import events_pb2 as safeguarding_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.type.v1 import security_pb2
from toex_common.audit import AuditEntry, AuditSink
from toex_common.events import IncomingEvent
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import Handler, PermanentError, region_of
from toex_kernel.errors import DomainError
from toex_kernel.principal import Principal
from toex_kernel.timestamps import to_datetime

from toex_tasking.adapters.mapping import job_ref
from toex_tasking.domain import commands
from toex_tasking.domain.model import Handling, Job
from toex_tasking.domain.referrals import ChangeKind, ReferralChange
from toex_tasking.service_layer import handlers
from toex_tasking.service_layer.ports import TaskingUnitOfWork

log = logging.getLogger(__name__)

JOB_NOTE_REQUESTED = safeguarding_events.JobNoteRequested.DESCRIPTOR.full_name


def note_command(event: IncomingEvent) -> commands.NoteForReferral:
    """The event as a command; PermanentError when it is not a usable JobNoteRequested."""
    message = event.message
    if not isinstance(message, safeguarding_events.JobNoteRequested):
        raise PermanentError(f"expected {JOB_NOTE_REQUESTED}, got {event.event_type or 'an untyped event'}")
    # The subject's region, never a label: the consumer base has refused an event whose header
    # or payload label names another region than its subject.
    region = region_of(event)
    try:
        job_region, job_id = job_ref(message.job, "job")
    except DomainError as exc:
        raise PermanentError(f"note refused: {exc}") from None
    return commands.NoteForReferral(
        referral_region=region,
        job_region=job_region,
        job_id=job_id,
        referral=message.referral,
        note_id=message.note_id,
        text=message.text,
    )


def make_note_handler(audit: AuditSink, clock: handlers.Clock = handlers.utcnow) -> Handler:
    async def handle(event: IncomingEvent, uow: Any) -> None:
        await on_job_note_requested(event, uow, audit, clock())

    return handle


async def on_job_note_requested(
    event: IncomingEvent, uow: TaskingUnitOfWork, audit: AuditSink, now: datetime
) -> None:
    cmd = note_command(event)
    try:
        added = await handlers.note_for_referral(cmd, uow, now)
    except DomainError as exc:
        raise PermanentError(f"note refused: {exc}") from None
    job, note = added.job, added.note
    if not added.written:
        log.info("note %s for %s is on %s already", note.id, cmd.referral, job.name)
        return
    _audit_after_commit(
        uow, audit, event, added.author, (job.name, f"{job.name}/notes/{note.id}"), cmd.referral
    )
    log.info("note %s for %s on %s", note.id, cmd.referral, job.name)


def _audit_after_commit(
    uow: TaskingUnitOfWork,
    audit: AuditSink,
    event: IncomingEvent,
    actor: Principal,
    resources: tuple[str, ...],
    referral: str,
) -> None:
    """Audit what `event` stored, as a call by `actor` would be, with the referral as purpose:
    once it is committed (the entry says what was stored, not what was tried)."""
    entry = AuditEntry(
        action=f"consume {event.event_type}",
        outcome="OK",
        actor_subject=actor.subject,
        actor_username=actor.username,
        actor_roles=actor.role_names,
        actor_region=actor.region.value,
        resources=resources,
        purpose=referral,
        peer=f"nats:{event.subject}",
    )

    async def record() -> None:
        await audit.record(entry)

    uow.after_commit(record)


# -- safeguarding's referral events, shown on the linked job ----------------------------------


@dataclass(frozen=True)
class Told:
    """What one referral event tells the job, besides what every one carries."""

    kind: ChangeKind
    summary: str
    actor: str = ""
    concerns: tuple[str, ...] = ()
    risk_level: str = ""


def _code(enum_type: Any, number: int, prefix: str) -> str:
    """`REFERRAL_STATE_SUBMITTED` -> `SUBMITTED`; "" when unset or unknown to this version."""
    try:
        name: str = enum_type.Name(number)
    except ValueError:
        return ""
    return "" if name.endswith("_UNSPECIFIED") else name.removeprefix(prefix)


def _words(enum_type: Any, number: int, prefix: str) -> str:
    """`DESTINATION_CHILDRENS_SOCIAL_CARE` -> `childrens social care`."""
    return _code(enum_type, number, prefix).replace("_", " ").lower() or "unknown"


def _when(stamp: Any) -> str:
    return to_datetime(stamp).strftime("%Y-%m-%d %H:%MZ")


def _risk(number: int) -> str:
    return _code(sg.RiskLevel, number, "RISK_LEVEL_")


def drafted(m: safeguarding_events.ReferralDrafted) -> Told:
    concerns = tuple(c for c in (_code(sg.Concern, n, "CONCERN_") for n in m.concerns) if c)
    risk = _risk(m.risk_level)
    about = "; ".join(
        part
        for part in (
            ", ".join(c.replace("_", " ").lower() for c in concerns),
            risk and f"risk {risk.lower()}",
        )
        if part
    )
    summary = f"Drafted ({about})" if about else "Drafted"
    return Told(ChangeKind.DRAFTED, f"{summary} by {m.created_by or 'unknown'}", m.created_by, concerns, risk)


def evidence_added(m: safeguarding_events.ReferralEvidenceAdded) -> Told:
    # How many and of which kinds, by whom: never an item's description or reference (officers'
    # free text, the case's own references).
    kinds = ", ".join(dict.fromkeys(_words(sg.EvidenceKind, e.kind, "EVIDENCE_KIND_") for e in m.evidence))
    by = ", ".join(dict.fromkeys(e.added_by for e in m.evidence if e.added_by))
    count = len(m.evidence)
    summary = f"Evidence added: {count} item{'' if count == 1 else 's'}" + (f" ({kinds})" if kinds else "")
    return Told(ChangeKind.EVIDENCE_ADDED, summary + (f" by {by}" if by else ""), by)


def approved(m: safeguarding_events.ReferralApproved) -> Told:
    going = ", ".join(_words(sg.Destination, d, "DESTINATION_") for d in m.destinations) or "none named"
    return Told(ChangeKind.APPROVED, f"Approved by {m.approved_by}; going to: {going}", m.approved_by)


def returned(m: safeguarding_events.ReferralReturned) -> Told:
    # Not the reason: the supervisor's instruction about the draft can discuss the subject.
    return Told(ChangeKind.RETURNED, f"Returned to draft by {m.returned_by}", m.returned_by)


def submitted(m: safeguarding_events.ReferralSubmitted) -> Told:
    summary = f"Sent to {_words(sg.Destination, m.destination, 'DESTINATION_')}"
    if m.HasField("submit_time"):
        summary += f" on {_when(m.submit_time)}"
    if m.HasField("decision_due_time"):
        summary += f"; decision due by {_when(m.decision_due_time)}"
    return Told(ChangeKind.SUBMITTED, summary)


def overdue(m: safeguarding_events.ReferralOverdue) -> Told:
    parts = [f"Overdue: {_words(sg.ClockKind, m.clock.kind, 'CLOCK_KIND_')}"]
    if m.clock.HasField("due_time"):
        parts[0] += f" due {_when(m.clock.due_time)}"
    parts.append(f"escalated to the {_words(sg.Escalation, m.escalation, 'ESCALATION_')}")
    risk = _risk(m.risk_level)
    if risk:
        parts.append(f"risk {risk.lower()}")
    return Told(ChangeKind.OVERDUE, "; ".join(parts), risk_level=risk)


def decision_recorded(m: safeguarding_events.ReferralDecisionRecorded) -> Told:
    d = m.decision
    summary = (
        f"{_words(sg.Destination, m.destination, 'DESTINATION_').capitalize()} decision "
        f"{_words(sg.DecisionKind, d.kind, 'DECISION_KIND_')} "
        f"{_words(sg.DecisionOutcome, d.outcome, 'DECISION_OUTCOME_')}"
    )
    if d.HasField("decision_time"):
        summary += f" on {to_datetime(d.decision_time).date().isoformat()}"
    if d.detail:
        summary += f": {d.detail}"
    return Told(ChangeKind.DECISION_RECORDED, summary, d.recorded_by)


def closed(m: safeguarding_events.ReferralClosed) -> Told:
    summary = f"Closed from {_words(sg.ReferralState, m.previous_state, 'REFERRAL_STATE_')}"
    summary += f" by {m.closed_by}" if m.closed_by else ""
    summary += f": {m.reason}" if m.reason else ""
    return Told(ChangeKind.CLOSED, summary, m.closed_by)


# What each referral event tells the job, by the message types registered on the bus.
REFERRAL_EVENTS: dict[type[Message], Callable[[Any], Told]] = {
    safeguarding_events.ReferralDrafted: drafted,
    safeguarding_events.ReferralEvidenceAdded: evidence_added,
    safeguarding_events.ReferralApproved: approved,
    safeguarding_events.ReferralReturned: returned,
    safeguarding_events.ReferralSubmitted: submitted,
    safeguarding_events.ReferralOverdue: overdue,
    safeguarding_events.ReferralDecisionRecorded: decision_recorded,
    safeguarding_events.ReferralClosed: closed,
}


def referral_change_command(event: IncomingEvent) -> commands.RecordReferralChange | None:
    """The event as a command; None for a referral linked to no job; PermanentError when it
    is not a usable referral event."""
    message: Any = event.message
    tell = REFERRAL_EVENTS.get(type(message))
    if tell is None:
        raise PermanentError(f"not a referral event: {event.event_type or 'an untyped event'}")
    if not message.linked_job:
        return None
    if not message.HasField("occur_time"):
        raise PermanentError(f"{event.event_type} {event.event_id} has no occur_time")
    # The subject's region, never a label: the consumer base has refused an event whose header
    # or payload label names another region than its subject.
    region = region_of(event)
    try:
        job_region, job_id = job_ref(message.linked_job, "linked_job")
    except DomainError as exc:
        raise PermanentError(f"referral change refused: {exc}") from None
    told = tell(message)
    handling = Handling.P if message.label.handling == security_pb2.HANDLING_CODE_P else Handling.C
    change = ReferralChange(
        event_id=event.event_id,
        job_id=job_id,
        referral=message.referral,
        kind=told.kind,
        # An event of an earlier version may not say: the state stays as the last one that did.
        state=_code(sg.ReferralState, message.state, "REFERRAL_STATE_"),
        occurred_at=to_datetime(message.occur_time),
        region=region,
        handling=handling,
        summary=told.summary,
        actor=told.actor,
        concerns=told.concerns,
        risk_level=told.risk_level,
    )
    return commands.RecordReferralChange(region, job_region, change)


async def on_referral_event(event: IncomingEvent, uow: TaskingUnitOfWork, audit: AuditSink) -> Job | None:
    """Show the event's change on its job; the job, or None when the referral names no job."""
    cmd = referral_change_command(event)
    if cmd is None:
        return None
    try:
        recorded = await handlers.record_referral_change(cmd, uow)
    except DomainError as exc:
        raise PermanentError(f"referral change refused: {exc}") from None
    job, referral = recorded.job, cmd.change.referral
    _audit_after_commit(uow, audit, event, recorded.actor, (job.name,), referral)
    log.info("%s of %s shown on %s", cmd.change.kind, referral, job.name)
    return job


def make_referral_handler(audit: AuditSink) -> Handler:
    async def handle(event: IncomingEvent, uow: Any) -> None:
        await on_referral_event(event, uow, audit)

    return handle


def subscribe(
    bus: MessageBus, service: str, audit: AuditSink, clock: handlers.Clock = handlers.utcnow
) -> None:
    """Tasking's consumers on the bus: the referral events under `<service>-referral-outcomes`
    (a first start reads the stream from its beginning), and the job notes asked for before
    them under `<service>-job-notes` (kept for one release, to drain the stream)."""
    bus.on(f"{service}-job-notes", safeguarding_events.JobNoteRequested, make_note_handler(audit, clock))
    referral_handler = make_referral_handler(audit)
    for message_type in REFERRAL_EVENTS:
        bus.on(f"{service}-referral-outcomes", message_type, referral_handler)
