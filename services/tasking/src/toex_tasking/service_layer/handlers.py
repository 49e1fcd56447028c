"""One handler per command. Handlers decide; the unit of work commits; nothing here knows gRPC."""

from __future__ import annotations

import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from toex_common.batching import Batcher
from toex_common.context import touch
from toex_common.uow import remember, replayed, request_scope
from toex_kernel.clock import Clock, utcnow
from toex_kernel.errors import InvalidArgument, OutOfScope, PermissionDenied, Violations
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_tasking.domain import commands, policy
from toex_tasking.domain.model import (
    TOKEN_INVALID,
    Handling,
    Job,
    JobState,
    Note,
    collaboration_problem,
    job_name,
    token_hash,
)
from toex_tasking.service_layer.ports import (
    DirectoryUser,
    JobQuery,
    ResearcherCount,
    TaskingUnitOfWork,
    UserDirectory,
)

MAX_TEXT = 10_000


@dataclass
class Deps:
    uow: Callable[[], TaskingUnitOfWork]
    directory: UserDirectory
    clock: Clock = utcnow
    # Units of work for reads that change nothing (no transaction round trips); defaults to `uow`.
    reader: Callable[[], TaskingUnitOfWork] | None = None
    # WatchInbox: how often it looks for new items, and how long one stream lasts.
    watch_poll_seconds: float = 1.0
    watch_seconds: float = 600.0
    # How long the requesting officer's one-time feedback token works after delivery.
    feedback_token_ttl: timedelta = field(default=timedelta(days=30))

    def __post_init__(self) -> None:
        # A read batch gathers for longer than the audit batch each call also waits for: with 50
        # concurrent GetJob calls, 40 turns gave 2,570-2,780 calls/s and 20 gave 2,150-2,300.
        self._jobs_to_read: Batcher[str, Job | None] = Batcher(self._read_jobs, gather_turns=40)

    def read(self) -> TaskingUnitOfWork:
        return (self.reader or self.uow)()

    async def job_to_read(self, job_id: str) -> Job | None:
        """The job as stored, to read and never to change: concurrent calls for it and other jobs
        share one query, and calls for the same job share one Job."""
        return await self._jobs_to_read.submit(job_id)

    async def _read_jobs(self, job_ids: list[str]) -> list[Job | None]:
        async with self.read() as uow:
            found = await uow.jobs.get_many(sorted(set(job_ids)))
        return [found.get(job_id) for job_id in job_ids]


def _scope(method: str, actor_subject: str) -> str:
    return request_scope("tasking", method, actor_subject)


async def create_job(cmd: commands.CreateJob, deps: Deps) -> Job:
    policy.ensure_can_create(cmd.actor, cmd.region)
    now = deps.clock()
    problems = Violations()
    if cmd.region is Region.NATIONAL and not cmd.actor.has(Role.NATIONAL_COORDINATOR):
        problems.add("parent", "only the national team raises national jobs")
    if not cmd.requesting_unit.strip():
        problems.add("job.requesting_unit", "say which force or unit asks for the support")
    if not cmd.operation_name.strip():
        problems.add("job.operation_name", "give the operation name")
    if cmd.due_at <= now:
        problems.add("job.due_time", "must be in the future")
    if len(cmd.description) > MAX_TEXT:
        problems.add("job.description", f"at most {MAX_TEXT} characters")
    _check_collaborators(cmd.region, cmd.collaborating_regions, problems)
    problems.raise_if_any()
    scope = _scope("CreateJob", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.jobs.get)) is not None:
            touch(prior.name)
            return prior
        job = Job.raise_job(
            region=cmd.region,
            requesting_unit=cmd.requesting_unit.strip(),
            requesting_officer=cmd.requesting_officer.strip(),
            operation_name=cmd.operation_name.strip(),
            job_type=cmd.job_type,
            priority=cmd.priority,
            due_at=cmd.due_at,
            description=cmd.description.strip(),
            handling=cmd.handling,
            subject_entity_ids=_subjects(cmd.subject_entity_ids),
            created_by=cmd.actor.username,
            now=now,
            collaborating_regions=cmd.collaborating_regions,
            requesting_force=cmd.requesting_force,
            threat_category=cmd.threat_category,
        )
        touch(job.name)
        await uow.jobs.add(job)
        await remember(uow, scope, cmd.idempotency, job.name)
        await uow.commit()
        return job


def _subjects(entity_ids: list[str]) -> list[str]:
    return [s.strip() for s in entity_ids if s.strip()]


def _check_collaborators(owner: Region, regions: list[Region], problems: Violations) -> None:
    if problem := collaboration_problem(owner, regions):
        problems.add("job.collaborating_regions", problem)


async def get_job(cmd: commands.GetJob, deps: Deps) -> Job:
    name = job_name(cmd.region, cmd.job_id)
    touch(name)
    job = await deps.job_to_read(cmd.job_id)
    if job is not None and job.region is not cmd.region:
        job = None
    return policy.ensure_visible(cmd.actor, job, name)


async def list_jobs(cmd: commands.ListJobs, deps: Deps) -> tuple[list[Job], bool]:
    """A page of jobs and whether more follow."""
    scope = policy.list_scope(cmd.actor, cmd.region)
    query = JobQuery(
        regions=scope.regions,
        or_assigned_to=scope.assigned_to,
        states=cmd.states,
        assignee=cmd.assignee,
        due_before=cmd.due_before,
        or_collaborating=scope.collaborating,
        owner=scope.owner,
        requesting_force=cmd.requesting_force,
        threat_category=cmd.threat_category,
    )
    async with deps.read() as uow:
        jobs = await uow.jobs.search(query, cmd.page_size + 1, cmd.after)
    page = jobs[: cmd.page_size]
    touch(*(job.name for job in page))
    return page, len(jobs) > cmd.page_size


async def _load_for_change(
    uow: TaskingUnitOfWork, cmd: commands.GetJob | object, region: Region, job_id: str, actor: Principal
) -> Job:
    """The job, locked, for a change by `actor`: NOT_FOUND when out of scope, PERMISSION_DENIED
    when the actor sees it only as a collaborating region's supervisor (read-only)."""
    name = job_name(region, job_id)
    touch(name)
    job = await uow.jobs.get(job_id, for_update=True)
    if job is not None and job.region is not region:
        job = None
    job = policy.ensure_visible(actor, job, name)
    policy.ensure_may_change(actor, job)
    return job


async def _researcher(deps: Deps, username: str, field: str) -> DirectoryUser:
    user = await deps.directory.find(username)
    if user is None:
        raise InvalidArgument.field(field, f"no user {username!r}")
    if Role.RESEARCHER not in user.roles:
        raise InvalidArgument.field(field, f"{username} is not a researcher")
    return user


async def assign_job(cmd: commands.AssignJob, deps: Deps) -> Job:
    names = list(dict.fromkeys(a.strip() for a in cmd.assignees if a.strip()))
    if not names:
        raise InvalidArgument.field("assignees", "name at least one researcher")
    scope = _scope("AssignJob", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.jobs.get)) is not None:
            touch(prior.name)
            return prior
        job = await _load_for_change(uow, cmd, cmd.region, cmd.job_id, cmd.actor)
        policy.ensure_can_manage(cmd.actor, job)
        any_region = policy.may_assign_across_regions(cmd.actor)
        researchers = []
        problems = Violations()
        for index, username in enumerate(names):
            user = await deps.directory.find(username)
            # For a supervisor, one answer whether the user is unknown, not a researcher or
            # another region's: the caller learns nothing about a user outside the job's region.
            if (
                user is None
                or Role.RESEARCHER not in user.roles
                or (user.region is not job.region and not any_region)
            ):
                problems.add(f"assignees[{index}]", _not_assignable(username, job, any_region))
                continue
            researchers.append((user.username, user.region))
        problems.raise_if_any()
        job.assign(researchers, by=cmd.actor.username, now=deps.clock())
        await uow.jobs.save(job)
        await remember(uow, scope, cmd.idempotency, job.name)
        await uow.commit()
        return job


def _not_assignable(username: str, job: Job, any_region: bool) -> str:
    if any_region:
        return f"{username!r} is not a researcher"
    return (
        f"{username!r} is not a researcher of {job.region.value}; "
        "use ReassignJob to hand the job to another region's researcher"
    )


async def update_job(cmd: commands.UpdateJob, deps: Deps) -> Job:
    """UpdateJob: the fields of the mask (already in `cmd.changes`) on an open job."""
    changes = cmd.changes
    now = deps.clock()
    problems = Violations()
    if changes.due_at is not None and changes.due_at <= now:
        problems.add("job.due_time", "must be in the future")
    if changes.description is not None and len(changes.description) > MAX_TEXT:
        problems.add("job.description", f"at most {MAX_TEXT} characters")
    if changes.collaborating_regions is not None:
        _check_collaborators(cmd.region, changes.collaborating_regions, problems)
    problems.raise_if_any()
    if changes.subject_entity_ids is not None:
        changes = replace(changes, subject_entity_ids=_subjects(changes.subject_entity_ids))
    if changes.description is not None:
        changes = replace(changes, description=changes.description.strip())
    scope = _scope("UpdateJob", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.jobs.get)) is not None:
            touch(prior.name)
            return prior
        job = await _load_for_change(uow, cmd, cmd.region, cmd.job_id, cmd.actor)
        policy.ensure_can_manage(cmd.actor, job)
        # Nothing that differs from what is stored: nothing stored, no event.
        if job.update(changes, by=cmd.actor.username, now=now):
            await uow.jobs.save(job)
        await remember(uow, scope, cmd.idempotency, job.name)
        await uow.commit()
        return job


async def reassign_job(cmd: commands.ReassignJob, deps: Deps) -> Job:
    if not cmd.reason.strip():
        raise InvalidArgument.field("reason", "say why the job moves")
    scope = _scope("ReassignJob", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.jobs.get)) is not None:
            touch(prior.name)
            return prior
        job = await _load_for_change(uow, cmd, cmd.region, cmd.job_id, cmd.actor)
        policy.ensure_can_manage(cmd.actor, job)
        user = await _researcher(deps, cmd.assignee.strip(), "assignee")
        job.reassign(
            user.username, user.region, reason=cmd.reason.strip(), by=cmd.actor.username, now=deps.clock()
        )
        await uow.jobs.save(job)
        await remember(uow, scope, cmd.idempotency, job.name)
        await uow.commit()
        return job


async def update_job_status(cmd: commands.UpdateJobStatus, deps: Deps) -> Job:
    scope = _scope("UpdateJobStatus", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.jobs.get)) is not None:
            touch(prior.name)
            return prior
        job = await _load_for_change(uow, cmd, cmd.region, cmd.job_id, cmd.actor)
        policy.ensure_can_move(cmd.actor, job, cmd.state)
        now = deps.clock()
        was = job.state
        job.change_state(cmd.state, by=cmd.actor.username, reason=cmd.reason, product=cmd.product, now=now)
        if was is not JobState.DELIVERED and job.state is JobState.DELIVERED:
            # Delivering asks the requesting officer for feedback: a one-time token, its hash kept.
            job.request_feedback(secrets.token_urlsafe(32), now=now, ttl=deps.feedback_token_ttl)
        await uow.jobs.save(job)
        await remember(uow, scope, cmd.idempotency, job.name)
        await uow.commit()
        return job


def _note_text(text: str) -> str:
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        raise InvalidArgument.field("text", f"1 to {MAX_TEXT} characters")
    return text


@dataclass(frozen=True)
class NoteAdded:
    job: Job
    note: Note
    # Who wrote it, as the job's rules saw them.
    author: Principal
    # False when a note with the id asked for was on the job already (nothing was written).
    written: bool = True


async def _add_note(uow: TaskingUnitOfWork, cmd: commands.AddJobNote, now: datetime) -> NoteAdded:
    """AddJobNote's work inside `uow`'s transaction: the note on a job the actor may see."""
    text = _note_text(cmd.text)
    job = await _load_for_change(uow, cmd, cmd.region, cmd.job_id, cmd.actor)
    if cmd.note_id and (known := next((n for n in job.notes if n.id == cmd.note_id), None)):
        return NoteAdded(job, known, cmd.actor, written=False)
    note = job.add_note(text, author=cmd.actor.username, now=now, note_id=cmd.note_id or None)
    await uow.jobs.save(job)
    return NoteAdded(job, note, cmd.actor)


async def add_job_note(cmd: commands.AddJobNote, deps: Deps) -> tuple[Job, str]:
    _note_text(cmd.text)
    scope = _scope("AddJobNote", cmd.actor.subject)
    async with deps.uow() as uow:
        if cmd.idempotency is not None:
            note_name = await uow.recall_request(
                scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint
            )
            if note_name is not None:
                job = await _load_for_change(uow, cmd, cmd.region, cmd.job_id, cmd.actor)
                return job, note_name.rsplit("/", 1)[-1]
        added = await _add_note(uow, cmd, deps.clock())
        job, note = added.job, added.note
        if cmd.idempotency is not None:
            await uow.remember_request(
                scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint, f"{job.name}/notes/{note.id}"
            )
        await uow.commit()
        return job, note.id


# Who writes the notes the safeguarding service asks for (as its service account is named).
SAFEGUARDING_SERVICE = "service-account-toex-safeguarding"
_NOTE_ID = re.compile(r"^[0-9a-f]{32}$")


def safeguarding_service(region: Region) -> Principal:
    """The safeguarding service acting in `region` alone: a region's service identity sees
    that region's jobs and no other (toex_kernel.policy.service_sees_all)."""
    return Principal("toex/safeguarding", SAFEGUARDING_SERVICE, region, frozenset({Role.SERVICE}))


async def note_for_referral(
    cmd: commands.NoteForReferral, uow: TaskingUnitOfWork, now: datetime
) -> NoteAdded:
    """Inside the consumer's transaction (it commits): the note the safeguarding service asks
    for on a referral's linked job, written by the safeguarding service acting in the referral's
    region, and only on a job of that region: an event published in one region (what that
    region's NATS permissions allow) never writes on another region's job. The note id makes a
    repeated request one note."""
    if cmd.job_region is not cmd.referral_region:
        raise OutOfScope(
            f"a note for a referral of {cmd.referral_region.value} may not go on a job of "
            f"{cmd.job_region.value}"
        )
    if not _NOTE_ID.match(cmd.note_id):
        raise InvalidArgument.field("note_id", "32 lower-case hex digits")
    # The referral is the purpose the audit log records: one of the event's region too.
    if not cmd.referral.startswith(f"regions/{cmd.referral_region.value}/referrals/"):
        raise InvalidArgument.field("referral", f"a referral of {cmd.referral_region.value}")
    actor = safeguarding_service(cmd.referral_region)
    return await _add_note(
        uow, commands.AddJobNote(actor, cmd.job_region, cmd.job_id, cmd.text, note_id=cmd.note_id), now
    )


@dataclass(frozen=True)
class ReferralChangeRecorded:
    job: Job
    # Who it is shown as, as the job's rules saw them: the safeguarding service in the region.
    actor: Principal


_REFERRAL = re.compile(r"^regions/(?P<region>[A-Z]+)/referrals/[^/]+$")


async def record_referral_change(
    cmd: commands.RecordReferralChange, uow: TaskingUnitOfWork
) -> ReferralChangeRecorded:
    """Inside the consumer's transaction (it commits): a safeguarding event about a referral,
    kept as a change of the referral on the job it names. Only on a job of the event's region
    (what that region's NATS permissions vouch for), seen as the safeguarding service acting in
    that region alone: an event published in one region never shows on another region's job.
    The job is not changed (no job event): what it shows of the referral is read with it."""
    change = cmd.change
    if cmd.job_region is not cmd.region:
        raise OutOfScope(
            f"a referral of {cmd.region.value} may not be shown on a job of {cmd.job_region.value}"
        )
    # The referral is the purpose the audit log records, and what the job shows: of the region too.
    match = _REFERRAL.match(change.referral)
    if match is None or match["region"] != cmd.region.value:
        raise InvalidArgument.field("referral", f"a referral of {cmd.region.value}")
    actor = safeguarding_service(cmd.region)
    name = job_name(cmd.job_region, change.job_id)
    job = await uow.jobs.get(change.job_id)
    if job is not None and job.region is not cmd.job_region:
        job = None
    job = policy.ensure_visible(actor, job, name)
    await uow.referral_changes.add(change)
    return ReferralChangeRecorded(job, actor)


MAX_OFFICER_NAME = 200
# Compared against when no job answers, so a wrong job costs what a wrong token does.
_NO_HASH = token_hash("")


async def record_feedback(cmd: commands.RecordFeedback, deps: Deps) -> Job:
    """The requesting officer's feedback: with the one-time token (no account), or recorded for
    them by the owning region's supervisor or a coordinator."""
    if cmd.token or cmd.actor is None:
        return await _record_feedback_by_token(cmd, deps)
    scope = _scope("RecordFeedback", cmd.actor.subject)
    async with deps.uow() as uow:
        if (prior := await replayed(uow, scope, cmd.idempotency, uow.jobs.get)) is not None:
            touch(prior.name)
            return prior
        job = await _load_for_change(uow, cmd, cmd.region, cmd.job_id, cmd.actor)
        policy.ensure_can_manage(cmd.actor, job)
        job.record_feedback(cmd.rating, cmd.comment, by=cmd.actor.username, now=deps.clock())
        await uow.jobs.save(job)
        await remember(uow, scope, cmd.idempotency, job.name)
        await uow.commit()
        return job


async def _record_feedback_by_token(cmd: commands.RecordFeedback, deps: Deps) -> Job:
    problems = Violations()
    if not cmd.token:
        problems.add("token", "give the one-time token of the feedback link")
    if not 1 <= cmd.rating <= 5:
        problems.add("rating", "must be from 1 to 5")
    if len(cmd.comment) > MAX_TEXT:
        problems.add("comment", f"at most {MAX_TEXT} characters")
    if len(cmd.officer_name) > MAX_OFFICER_NAME:
        problems.add("officer_name", f"at most {MAX_OFFICER_NAME} characters")
    problems.raise_if_any()
    name = job_name(cmd.region, cmd.job_id)
    touch(name)
    async with deps.uow() as uow:
        job = await uow.jobs.get(cmd.job_id, for_update=True)
        if job is None or job.region is not cmd.region:
            # A missing job answers as a wrong token does, after the same comparison.
            hmac.compare_digest(_NO_HASH, token_hash(cmd.token))
            raise PermissionDenied("the feedback token is not valid for this job", reason=TOKEN_INVALID)
        job.record_feedback_by_token(cmd.token, cmd.rating, cmd.comment, cmd.officer_name, now=deps.clock())
        await uow.jobs.save(job)
        await uow.commit()
        return job


async def get_region_capacity(
    cmd: commands.GetRegionCapacity, deps: Deps
) -> tuple[list[ResearcherCount], int, int]:
    policy.ensure_can_see_capacity(cmd.actor, cmd.region)
    touch(f"regions/{cmd.region.value}/capacity")
    async with deps.read() as uow:
        counts, unassigned, open_jobs = await uow.jobs.open_load(cmd.region, deps.clock())
    # Researchers of the region with nothing open still count: they are the spare capacity.
    seen = {c.username for c in counts}
    for user in await deps.directory.researchers(cmd.region):
        if user.username not in seen:
            counts.append(ResearcherCount(user.username, user.region, 0, 0))
    counts.sort(key=lambda c: (c.open_jobs, c.username))
    return counts, unassigned, open_jobs


async def mark_overdue_jobs(cmd: commands.MarkOverdueJobs, deps: Deps) -> int:
    """Publish JobOverdue once for each open job past its due time. Safe to run on every replica."""
    async with deps.uow() as uow:
        jobs = await uow.jobs.overdue_candidates(cmd.now, cmd.limit)
        marked = 0
        for job in jobs:
            if job.notice_overdue(cmd.now):
                await uow.jobs.save(job)
                marked += 1
        await uow.commit()
        return marked


def default_handling(value: Handling | None) -> Handling:
    return value or Handling.C
