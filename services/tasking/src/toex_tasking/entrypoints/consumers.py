"""NATS consumers: what other services ask of tasking by event.

- safeguarding `JobNoteRequested`: a change of a referral linked to a job is noted on the job,
  by the safeguarding service acting in the referral's region, and only on a job of the region
  whose subject the event came on (what that region's NATS permissions vouch for). A note that
  may not or cannot be written (another region's job, a job that does not exist, an unusable
  text) is refused: dead-lettered under the subject's region, never written.

Run through the idempotent consumer base: the event's id is claimed in the inbox in the
transaction that writes the note, and the note's id makes a request published twice one note.
Each note written has an audit entry, as an AddJobNote call would: the safeguarding service as
the actor, the referral as the purpose.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from toex.safeguarding.events.v1 import events_pb2 as safeguarding_events
from toex_common.audit import AuditEntry, AuditSink
from toex_common.events import IncomingEvent
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import Handler, PermanentError, region_of
from toex_kernel.errors import DomainError

from toex_tasking.adapters.mapping import job_ref
from toex_tasking.domain import commands
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
    actor = added.author
    entry = AuditEntry(
        action=f"consume {JOB_NOTE_REQUESTED}",
        outcome="OK",
        actor_subject=actor.subject,
        actor_username=actor.username,
        actor_roles=actor.role_names,
        actor_region=actor.region.value,
        resources=(job.name, f"{job.name}/notes/{note.id}"),
        purpose=cmd.referral,
        peer=f"nats:{event.subject}",
    )

    async def record() -> None:
        await audit.record(entry)

    # Once the note is stored: the entry says what was written, not what was tried.
    uow.after_commit(record)
    log.info("note %s for %s on %s", note.id, cmd.referral, job.name)


def subscribe(
    bus: MessageBus, service: str, audit: AuditSink, clock: handlers.Clock = handlers.utcnow
) -> None:
    """Tasking's consumers on the bus: job notes under `<service>-job-notes`."""
    bus.on(f"{service}-job-notes", safeguarding_events.JobNoteRequested, make_note_handler(audit, clock))
