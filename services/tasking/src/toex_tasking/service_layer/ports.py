"""The ports the handlers depend on. Adapters implement them; unit tests fake them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from toex_common.uow import UnitOfWork
from toex_kernel.principal import Role
from toex_kernel.regions import Region

from toex_tasking.domain.model import Job, JobState


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


@dataclass(frozen=True)
class ResearcherCount:
    username: str
    region: Region
    open_jobs: int
    overdue_jobs: int


class JobRepository(Protocol):
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


@dataclass(frozen=True)
class DirectoryUser:
    username: str
    region: Region
    roles: frozenset[Role]


class UserDirectory(Protocol):
    async def find(self, username: str) -> DirectoryUser | None: ...
    async def researchers(self, region: Region) -> list[DirectoryUser]: ...


class TaskingUnitOfWork(UnitOfWork, Protocol):
    jobs: JobRepository

    async def __aenter__(self) -> TaskingUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
