"""Commands: what callers ask the tasking service to do (imperative names)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.idempotency import Idempotency
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_tasking.domain.inbox import Cursor, InboxFilter, Notice, Source
from toex_tasking.domain.model import Handling, JobChanges, JobState, JobType, Priority
from toex_tasking.domain.referrals import ReferralChange


@dataclass(frozen=True)
class CreateJob:
    # What a job is raised with is what the Job holds: the fields repeat by design.
    # pylint: disable=duplicate-code
    actor: Principal
    region: Region
    requesting_unit: str
    requesting_officer: str
    operation_name: str
    job_type: JobType
    priority: Priority
    due_at: datetime
    description: str
    handling: Handling
    subject_entity_ids: list[str] = field(default_factory=list)
    idempotency: Idempotency | None = None
    collaborating_regions: list[Region] = field(default_factory=list)
    requesting_force: Force | None = None
    threat_category: ThreatCategory | None = None


@dataclass(frozen=True)
class GetJob:
    actor: Principal
    region: Region
    job_id: str


@dataclass(frozen=True)
class ListJobs:
    actor: Principal
    region: Region | None
    states: frozenset[JobState]
    assignee: str
    due_before: datetime | None
    page_size: int
    after: tuple[datetime, str] | None
    requesting_force: Force | None = None
    threat_category: ThreatCategory | None = None


@dataclass(frozen=True)
class UpdateJob:
    actor: Principal
    region: Region
    job_id: str
    changes: JobChanges
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class AssignJob:
    actor: Principal
    region: Region
    job_id: str
    assignees: list[str]
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class ReassignJob:
    actor: Principal
    region: Region
    job_id: str
    assignee: str
    reason: str
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class UpdateJobStatus:
    actor: Principal
    region: Region
    job_id: str
    state: JobState
    reason: str
    product: str
    idempotency: Idempotency | None = None


@dataclass(frozen=True)
class AddJobNote:
    actor: Principal
    region: Region
    job_id: str
    text: str
    idempotency: Idempotency | None = None
    # The note's id when the caller gives it: a note with this id on the job already is the
    # answer, and nothing is added again.
    note_id: str = ""


@dataclass(frozen=True)
class NoteForReferral:
    """The safeguarding service asks for a note on a referral's linked job (its event
    JobNoteRequested, published on `referral_region`'s subject)."""

    referral_region: Region
    job_region: Region
    job_id: str
    referral: str
    note_id: str
    text: str


@dataclass(frozen=True)
class RecordReferralChange:
    """A safeguarding event about a referral linked to a job (published on `region`'s subject)
    is to be shown on the job it names, of `job_region`."""

    region: Region
    job_region: Region
    change: ReferralChange


@dataclass(frozen=True)
class RecordFeedback:
    # None for the requesting officer, who holds no account: `token` is the credential then.
    actor: Principal | None
    region: Region
    job_id: str
    rating: int
    comment: str
    idempotency: Idempotency | None = None
    # The one-time token of the job's FeedbackRequested event.
    token: str = ""
    officer_name: str = ""


@dataclass(frozen=True)
class GetRegionCapacity:
    actor: Principal
    region: Region


@dataclass(frozen=True)
class MarkOverdueJobs:
    now: datetime
    limit: int = 200


@dataclass(frozen=True)
class DeliverNotices:
    """An event's notices, for the inbox (from a consumer of the event's stream)."""

    source: Source
    notices: tuple[Notice, ...]


@dataclass(frozen=True)
class ListInboxItems:
    actor: Principal
    filter: InboxFilter
    page_size: int
    # The last item of the previous page: (event time, item id).
    after: tuple[datetime, str] | None = None


@dataclass(frozen=True)
class MarkInboxItemsRead:
    actor: Principal
    # The items' ids; or, with `all_matching`, every item of the actor's matching `filter`.
    item_ids: list[str] = field(default_factory=list)
    all_matching: bool = False
    filter: InboxFilter = field(default_factory=InboxFilter)


@dataclass(frozen=True)
class WatchInbox:
    actor: Principal
    filter: InboxFilter
    # Start after this item (its id), or at `resume`; with neither, now.
    start_after: str = ""
    resume: Cursor | None = None
