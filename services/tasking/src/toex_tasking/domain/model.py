"""The job aggregate: an intelligence request and its lifecycle.

RAISED -> ASSIGNED -> IN_PROGRESS -> DELIVERED -> CLOSED, with DECLINED (from RAISED or
ASSIGNED) and CANCELLED (from any open state). Every change records a domain event; the
service layer turns those into integration events.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from toex_kernel.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.regions import Region

from toex_tasking.domain import events
from toex_tasking.domain.referrals import LinkedReferral, ReferralChange, linked_referrals


class JobState(enum.StrEnum):
    RAISED = "RAISED"
    ASSIGNED = "ASSIGNED"
    IN_PROGRESS = "IN_PROGRESS"
    DELIVERED = "DELIVERED"
    CLOSED = "CLOSED"
    DECLINED = "DECLINED"
    CANCELLED = "CANCELLED"


OPEN_STATES = frozenset({JobState.RAISED, JobState.ASSIGNED, JobState.IN_PROGRESS})
WORKING_STATES = frozenset({JobState.ASSIGNED, JobState.IN_PROGRESS})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.RAISED: frozenset({JobState.ASSIGNED, JobState.DECLINED, JobState.CANCELLED}),
    JobState.ASSIGNED: frozenset({JobState.IN_PROGRESS, JobState.DECLINED, JobState.CANCELLED}),
    JobState.IN_PROGRESS: frozenset({JobState.DELIVERED, JobState.CANCELLED}),
    JobState.DELIVERED: frozenset({JobState.CLOSED}),
    JobState.CLOSED: frozenset(),
    JobState.DECLINED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


class JobType(enum.StrEnum):
    COMMS_ANALYSIS = "COMMS_ANALYSIS"
    ANPR = "ANPR"
    INTELLIGENCE_DEVELOPMENT = "INTELLIGENCE_DEVELOPMENT"
    OPEN_SOURCE = "OPEN_SOURCE"
    SYSTEMS_CHECKS = "SYSTEMS_CHECKS"
    SAFEGUARDING = "SAFEGUARDING"


class Priority(enum.StrEnum):
    ROUTINE = "ROUTINE"
    PRIORITY = "PRIORITY"
    URGENT = "URGENT"


class Handling(enum.StrEnum):
    P = "P"
    C = "C"


@dataclass(frozen=True)
class Assignee:
    username: str
    region: Region
    assigned_at: datetime


@dataclass(frozen=True)
class Note:
    id: str
    author: str
    text: str
    created_at: datetime


@dataclass(frozen=True)
class Feedback:
    rating: int
    comment: str
    recorded_by: str
    recorded_at: datetime
    # The name the officer gave, if any (feedback by one-time token).
    officer_name: str = ""


# Who a feedback recorded with the one-time token is recorded by (the officer holds no account).
BY_TOKEN = "requesting officer (one-time token)"
# ErrorInfo reasons of a refused feedback token.
TOKEN_INVALID = "FEEDBACK_TOKEN_INVALID"
TOKEN_USED = "FEEDBACK_TOKEN_USED"
TOKEN_EXPIRED = "FEEDBACK_TOKEN_EXPIRED"


def token_hash(token: str) -> str:
    """What is stored of a feedback token: its SHA-256 (the token is 256 random bits, so a
    plain hash is as good as a slow one)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class JobChanges:
    """What UpdateJob changes: the fields its update mask names; None leaves a field alone."""

    due_at: datetime | None = None
    priority: Priority | None = None
    subject_entity_ids: list[str] | None = None
    description: str | None = None
    collaborating_regions: list[Region] | None = None
    requesting_force: Force | None = None
    threat_category: ThreatCategory | None = None


def collaboration_problem(owner: Region, regions: list[Region]) -> str | None:
    """What is wrong with `regions` as the collaborating regions of a job `owner` owns, if anything."""
    if owner in regions:
        return f"{owner.value} owns the job; it cannot also collaborate on it"
    return None


def collaborators(owner: Region, regions: list[Region]) -> list[Region]:
    """Collaborating regions once each, in the regions' own order (so two lists compare)."""
    if problem := collaboration_problem(owner, regions):
        raise InvalidArgument.field("job.collaborating_regions", problem)
    return [region for region in Region if region in set(regions)]


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


def job_name(region: Region, job_id: str) -> str:
    return f"regions/{region.value}/jobs/{job_id}"


@dataclass
class Job:
    id: str
    region: Region
    requesting_unit: str
    requesting_officer: str
    operation_name: str
    job_type: JobType
    priority: Priority
    due_at: datetime
    description: str
    handling: Handling
    created_by: str
    created_at: datetime
    updated_at: datetime
    state: JobState = JobState.RAISED
    assignees: list[Assignee] = field(default_factory=list)
    subject_entity_ids: list[str] = field(default_factory=list)
    # Regions working the operation with the owning one: their supervisors see the job read-only.
    collaborating_regions: list[Region] = field(default_factory=list)
    notes: list[Note] = field(default_factory=list)
    product: str = ""
    feedback: Feedback | None = None
    # What products group by: the force that asked and the threat (None: not recorded).
    requesting_force: Force | None = None
    threat_category: ThreatCategory | None = None
    # The requesting officer's feedback token, set on delivery: its hash only, and its expiry.
    feedback_token_hash: str | None = None
    feedback_token_expires_at: datetime | None = None
    # The token issued by this change (never stored): for the caller who delivered the job.
    issued_feedback_token: str = field(default="", repr=False, compare=False)
    # The due time for which JobOverdue was last published (a new due time re-arms it).
    overdue_notified_for: datetime | None = None
    # Grows each time the job is stored; orders its events (JobAccess.revision).
    revision: int = 0
    # What the safeguarding service's events told of the referrals linked to the job (read
    # only: stored by the consumer of those events, never by saving the job).
    referral_changes: list[ReferralChange] = field(default_factory=list, compare=False)
    events: list[events.DomainEvent] = field(default_factory=list, repr=False, compare=False)
    new_notes: list[Note] = field(default_factory=list, repr=False, compare=False)

    @property
    def name(self) -> str:
        return job_name(self.region, self.id)

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES

    def is_overdue(self, now: datetime) -> bool:
        return self.is_open and self.due_at < now

    @property
    def linked_referrals(self) -> list[LinkedReferral]:
        return linked_referrals(self.id, self.referral_changes)

    def assigned_to(self, username: str) -> bool:
        return any(a.username == username for a in self.assignees)

    @classmethod
    def raise_job(
        cls,
        *,
        region: Region,
        requesting_unit: str,
        requesting_officer: str,
        operation_name: str,
        job_type: JobType,
        priority: Priority,
        due_at: datetime,
        description: str,
        handling: Handling,
        subject_entity_ids: list[str],
        created_by: str,
        now: datetime,
        job_id: str | None = None,
        collaborating_regions: list[Region] | None = None,
        requesting_force: Force | None = None,
        threat_category: ThreatCategory | None = None,
    ) -> Job:
        job = cls(
            id=job_id or new_job_id(),
            region=region,
            requesting_unit=requesting_unit,
            requesting_officer=requesting_officer,
            operation_name=operation_name,
            job_type=job_type,
            priority=priority,
            due_at=due_at,
            description=description,
            handling=handling,
            subject_entity_ids=list(dict.fromkeys(subject_entity_ids)),
            collaborating_regions=collaborators(region, collaborating_regions or []),
            created_by=created_by,
            created_at=now,
            updated_at=now,
            requesting_force=requesting_force,
            threat_category=threat_category,
        )
        job.events.append(events.JobCreated(job.name))
        return job

    def _move(self, to: JobState, *, by: str, reason: str, now: datetime) -> None:
        if to not in TRANSITIONS[self.state]:
            allowed = ", ".join(sorted(TRANSITIONS[self.state])) or "none (the job is finished)"
            raise FailedPrecondition(
                f"cannot move job from {self.state} to {to}; allowed next states: {allowed}",
                type="STATE",
                subject=self.name,
                description=f"job is {self.state}",
            )
        previous = self.state
        self.state = to
        self.updated_at = now
        self.events.append(events.JobStatusChanged(self.name, previous, to, reason, by))

    def assign(self, researchers: list[tuple[str, Region]], *, by: str, now: datetime) -> None:
        if self.state not in (JobState.RAISED, JobState.ASSIGNED, JobState.IN_PROGRESS):
            raise FailedPrecondition(
                f"cannot assign a job that is {self.state}", type="STATE", subject=self.name
            )
        added = [
            Assignee(username, region, now)
            for username, region in researchers
            if not self.assigned_to(username)
        ]
        if not added:
            return
        self.assignees.extend(added)
        self.updated_at = now
        self.events.append(events.JobAssigned(self.name, tuple(added), by))
        if self.state is JobState.RAISED:
            self._move(JobState.ASSIGNED, by=by, reason="assigned", now=now)

    def reassign(self, username: str, region: Region, *, reason: str, by: str, now: datetime) -> None:
        if self.state not in WORKING_STATES:
            raise FailedPrecondition(
                f"only an assigned or in-progress job can be reassigned; this one is {self.state}",
                type="STATE",
                subject=self.name,
            )
        if [a.username for a in self.assignees] == [username]:
            return
        previous = tuple(self.assignees)
        new = Assignee(username, region, now)
        self.assignees = [new]
        self.updated_at = now
        self.events.append(events.JobReassigned(self.name, previous, new, reason, by))

    def change_state(self, to: JobState, *, by: str, reason: str, product: str, now: datetime) -> None:
        if to is self.state:
            return
        if to is JobState.ASSIGNED:
            raise FailedPrecondition(
                "a job becomes ASSIGNED by AssignJob, not by a status change", type="STATE", subject=self.name
            )
        if to in (JobState.DECLINED, JobState.CANCELLED) and not reason.strip():
            raise InvalidArgument.field("reason", f"say why the job is {to.lower()}")
        if to is JobState.DELIVERED:
            if not (product.strip() or self.product):
                raise InvalidArgument.field("product", "describe the product delivered")
            if to in TRANSITIONS[self.state] and product.strip():
                self.product = product.strip()
        self._move(to, by=by, reason=reason.strip(), now=now)

    def update(self, changes: JobChanges, *, by: str, now: datetime) -> tuple[str, ...]:
        """Apply `changes` to an open job; returns the names (JobChanges attributes) of the
        fields whose values changed, and records JobUpdated when any did."""
        if not self.is_open:
            raise FailedPrecondition(
                f"only an open job can be updated; this one is {self.state}",
                type="STATE",
                subject=self.name,
            )
        changed: list[str] = []
        if changes.due_at is not None and changes.due_at != self.due_at:
            self.due_at = changes.due_at
            # A new due time is a new promise: JobOverdue is owed again when it passes.
            self.overdue_notified_for = None
            changed.append("due_at")
        if changes.priority is not None and changes.priority is not self.priority:
            self.priority = changes.priority
            changed.append("priority")
        if changes.subject_entity_ids is not None:
            subjects = list(dict.fromkeys(changes.subject_entity_ids))
            if subjects != self.subject_entity_ids:
                self.subject_entity_ids = subjects
                changed.append("subject_entity_ids")
        if changes.description is not None and changes.description != self.description:
            self.description = changes.description
            changed.append("description")
        if changes.collaborating_regions is not None:
            regions = collaborators(self.region, changes.collaborating_regions)
            if regions != self.collaborating_regions:
                self.collaborating_regions = regions
                changed.append("collaborating_regions")
        if changes.requesting_force is not None and changes.requesting_force is not self.requesting_force:
            self.requesting_force = changes.requesting_force
            changed.append("requesting_force")
        if changes.threat_category is not None and changes.threat_category is not self.threat_category:
            self.threat_category = changes.threat_category
            changed.append("threat_category")
        if changed:
            self.updated_at = now
            self.events.append(events.JobUpdated(self.name, tuple(changed), by))
        return tuple(changed)

    def add_note(self, text: str, *, author: str, now: datetime, note_id: str | None = None) -> Note:
        note = Note(note_id or uuid.uuid4().hex[:16], author, text, now)
        self.notes.append(note)
        self.new_notes.append(note)
        self.updated_at = now
        return note

    def request_feedback(self, token: str, *, now: datetime, ttl: timedelta) -> None:
        """Ask the requesting officer for feedback on the delivered job: keep the hash of the
        one-time `token` and its expiry, and record FeedbackRequested (which carries the token
        to a notifier)."""
        if self.state is not JobState.DELIVERED or self.feedback is not None:
            return
        self.feedback_token_hash = token_hash(token)
        self.feedback_token_expires_at = now + ttl
        self.issued_feedback_token = token
        self.events.append(events.FeedbackRequested(self.name, token, now + ttl))

    def check_feedback_token(self, token: str, now: datetime) -> None:
        """PERMISSION_DENIED unless `token` is this job's feedback token, unused and unexpired.
        The hash is compared in constant time; used or expired is told only to a caller who
        holds the right token."""
        stored = self.feedback_token_hash
        if not stored or not hmac.compare_digest(stored, token_hash(token)):
            raise PermissionDenied("the feedback token is not valid for this job", reason=TOKEN_INVALID)
        if self.feedback is not None:
            raise PermissionDenied("feedback has been recorded with this token already", reason=TOKEN_USED)
        if self.feedback_token_expires_at is None or self.feedback_token_expires_at <= now:
            raise PermissionDenied(
                "the feedback token has expired; ask the unit for a new link", reason=TOKEN_EXPIRED
            )

    def record_feedback_by_token(
        self, token: str, rating: int, comment: str, officer_name: str, *, now: datetime
    ) -> None:
        """The requesting officer's own feedback, with the one-time token: it works once."""
        self.check_feedback_token(token, now)
        self.record_feedback(rating, comment, by=BY_TOKEN, now=now, officer_name=officer_name)

    def record_feedback(
        self, rating: int, comment: str, *, by: str, now: datetime, officer_name: str = ""
    ) -> None:
        if self.state not in (JobState.DELIVERED, JobState.CLOSED):
            raise FailedPrecondition(
                f"feedback is recorded after delivery; this job is {self.state}",
                type="STATE",
                subject=self.name,
            )
        if not 1 <= rating <= 5:
            raise InvalidArgument.field("rating", "must be from 1 to 5")
        self.feedback = Feedback(rating, comment.strip(), by, now, officer_name.strip())
        self.updated_at = now
        self.events.append(events.FeedbackRecorded(self.name))

    def notice_overdue(self, now: datetime) -> bool:
        """Record JobOverdue once per due time. Returns whether it was recorded."""
        if not self.is_overdue(now) or self.overdue_notified_for == self.due_at:
            return False
        self.overdue_notified_for = self.due_at
        self.events.append(events.JobOverdue(self.name))
        return True
