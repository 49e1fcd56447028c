"""The ports the handlers depend on. Adapters implement them; unit tests fake them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from toex_common.uow import UnitOfWork
from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.principal import Role
from toex_kernel.regions import Region

from toex_tasking.domain.inbox import Audience, Cursor, InboxFilter, InboxItem
from toex_tasking.domain.model import Job, JobState
from toex_tasking.domain.referrals import ReferralChange


@dataclass(frozen=True)
class JobQuery:
    # None: every region; otherwise jobs owned by these regions...
    regions: frozenset[Region] | None
    # ...plus, when set, jobs assigned to this user wherever they are owned...
    or_assigned_to: str | None
    states: frozenset[JobState]
    assignee: str
    due_before: datetime | None
    # ...plus, when set, jobs this region collaborates on.
    or_collaborating: Region | None = None
    # Of all those, only the jobs this region owns.
    owner: Region | None = None
    # Only jobs requested by this force / about this threat (None: any).
    requesting_force: Force | None = None
    threat_category: ThreatCategory | None = None


@dataclass(frozen=True)
class ResearcherCount:
    username: str
    region: Region
    open_jobs: int
    overdue_jobs: int


class JobRepository(Protocol):
    """Jobs as stored. A job read comes with its linked referrals' changes (`referral_changes`);
    saving a job never writes them."""

    async def add(self, job: Job) -> None: ...
    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None: ...
    async def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs of `job_ids` that exist, by id."""
        ...

    async def save(self, job: Job) -> None: ...
    async def search(self, query: JobQuery, limit: int, after: tuple[datetime, str] | None) -> list[Job]: ...
    async def open_load(self, region: Region, now: datetime) -> tuple[list[ResearcherCount], int, int]:
        """(per-researcher counts for researchers of `region` or holding its jobs,
        unassigned open jobs of the region, open jobs of the region)"""
        ...

    async def overdue_candidates(self, now: datetime, limit: int) -> list[Job]: ...


class ReferralChangeRepository(Protocol):
    """The changes of safeguarding referrals linked to jobs, one per event."""

    async def add(self, change: ReferralChange) -> None:
        """Store `change`; one of the same event stored already is left as it is."""
        ...


@dataclass(frozen=True)
class DirectoryUser:
    username: str
    region: Region
    roles: frozenset[Role]


class UserDirectory(Protocol):
    async def find(self, username: str) -> DirectoryUser | None: ...
    async def researchers(self, region: Region) -> list[DirectoryUser]: ...


class InboxRepository(Protocol):
    """The inbox read model. Every read takes the reader's `Audience`: nothing else is seen."""

    async def add(self, items: list[InboxItem]) -> None:
        """Store `items`; one of an event and recipient stored already is left as it is."""
        ...

    async def search(
        self, audience: Audience, keep: InboxFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[InboxItem]:
        """The audience's items, the newest event first, after (event time, id) when given,
        with the reader's read state."""
        ...

    async def visible(self, audience: Audience, item_ids: list[str]) -> set[str]:
        """Those of `item_ids` the audience sees."""
        ...

    async def existing(self, item_ids: list[str]) -> set[str]:
        """Those of `item_ids` that exist, whoever sees them."""
        ...

    async def mark_read(self, username: str, item_ids: list[str], now: datetime) -> int:
        """Mark read for `username`; how many were unread."""
        ...

    async def mark_matching_read(self, audience: Audience, keep: InboxFilter, now: datetime) -> int:
        """Mark read every item of the audience's that `keep` keeps; how many were unread."""
        ...

    async def cursor_of(self, audience: Audience, item_id: str) -> Cursor | None:
        """Where the item arrived, if the audience sees it."""
        ...

    async def horizon(self) -> Cursor:
        """Now: every item that has arrived is at or before it, give or take those arriving."""
        ...

    async def arrived_after(
        self, audience: Audience, keep: InboxFilter, cursor: Cursor, limit: int
    ) -> tuple[list[InboxItem], Cursor]:
        """The audience's items that arrived after `cursor`, in the order they arrived (at most
        `limit`), and the cursor to continue from."""
        ...


class TaskingUnitOfWork(UnitOfWork, Protocol):
    jobs: JobRepository
    inbox: InboxRepository
    referral_changes: ReferralChangeRepository

    async def __aenter__(self) -> TaskingUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
