import copy
import dataclasses
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from toex_common.events import EventEnvelope
from toex_common.testing.fakes import FakeUnitOfWorkBase
from toex_kernel.regions import Region
from toex_tasking.adapters import integration
from toex_tasking.domain.inbox import Audience, Cursor, InboxFilter, InboxItem
from toex_tasking.domain.model import OPEN_STATES, WORKING_STATES, Job, JobState
from toex_tasking.domain.referrals import ReferralChange
from toex_tasking.service_layer.ports import JobQuery, ResearcherCount


class FakeReferralChangeRepository:
    """Changes of linked referrals by event id; like the database, only once committed."""

    def __init__(self) -> None:
        self.changes: dict[str, ReferralChange] = {}
        self.pending: list[ReferralChange] = []

    async def add(self, change: ReferralChange) -> None:
        self.pending.append(change)

    def commit(self) -> None:
        for change in self.pending:
            self.changes.setdefault(change.event_id, change)
        self.pending = []

    def of_job(self, job_id: str) -> list[ReferralChange]:
        """Every change of each referral that ever named the job, as the repository reads them."""
        named = {c.referral for c in self.changes.values() if c.job_id == job_id}
        return sorted((c for c in self.changes.values() if c.referral in named), key=lambda c: c.order)


class FakeJobRepository:
    def __init__(self, uow: FakeUnitOfWorkBase, referral_changes: FakeReferralChangeRepository) -> None:
        self.jobs: dict[str, Job] = {}
        self.uow = uow
        self.referral_changes = referral_changes

    def _store(self, job: Job) -> None:
        # Like the database: state is stored, pending domain events are not, and the linked
        # referrals' changes are stored by their own repository only.
        job.new_notes.clear()
        stored = copy.deepcopy(job)
        stored.events = []
        stored.referral_changes = []
        self.jobs[job.id] = stored

    def _read(self, job: Job) -> Job:
        found = copy.deepcopy(job)
        found.referral_changes = self.referral_changes.of_job(job.id)
        return found

    async def add(self, job: Job) -> None:
        self.uow.track(job)
        job.revision += 1
        self._store(job)

    async def save(self, job: Job) -> None:
        self.uow.track(job)
        job.revision += 1
        self._store(job)

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        job = self.jobs.get(job_id)
        return self._read(job) if job else None

    async def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        return {i: self._read(self.jobs[i]) for i in job_ids if i in self.jobs}

    async def search(self, query: JobQuery, limit: int, after: tuple[datetime, str] | None) -> list[Job]:
        found = []
        for job in sorted(self.jobs.values(), key=lambda j: (j.created_at, j.id), reverse=True):
            in_scope = query.regions is None and not query.or_assigned_to and query.or_collaborating is None
            if query.regions is not None and job.region in query.regions:
                in_scope = True
            if query.or_assigned_to and job.assigned_to(query.or_assigned_to):
                in_scope = True
            if query.or_collaborating is not None and query.or_collaborating in job.collaborating_regions:
                in_scope = True
            if not in_scope:
                continue
            if query.owner is not None and job.region is not query.owner:
                continue
            if query.states and job.state not in query.states:
                continue
            if query.assignee and not job.assigned_to(query.assignee):
                continue
            if query.due_before and not job.due_at < query.due_before:
                continue
            if query.requesting_force is not None and job.requesting_force is not query.requesting_force:
                continue
            if query.threat_category is not None and job.threat_category is not query.threat_category:
                continue
            if after and not (job.created_at, job.id) < after:
                continue
            found.append(self._read(job))
        return found[:limit]

    async def open_load(self, region: Region, now: datetime) -> tuple[list[ResearcherCount], int, int]:
        counts: dict[str, list] = {}
        for job in self.jobs.values():
            if job.state not in WORKING_STATES:
                continue
            for a in job.assignees:
                if a.region is region or job.region is region:
                    entry = counts.setdefault(a.username, [a.region, 0, 0])
                    entry[1] += 1
                    entry[2] += job.due_at < now
        open_jobs = [j for j in self.jobs.values() if j.region is region and j.state in OPEN_STATES]
        return (
            [ResearcherCount(u, r, o, d) for u, (r, o, d) in counts.items()],
            sum(j.state is JobState.RAISED for j in open_jobs),
            len(open_jobs),
        )

    async def overdue_candidates(self, now: datetime, limit: int) -> list[Job]:
        return [
            copy.deepcopy(j)
            for j in self.jobs.values()
            if j.is_open and j.due_at < now and j.overdue_notified_for != j.due_at
        ][:limit]


class FakeInboxRepository:
    """The inbox in memory: items by id (an event and recipient make one id), read state per
    user, and the order items arrived in."""

    def __init__(self) -> None:
        self.items: dict[str, InboxItem] = {}
        self.reads: dict[tuple[str, str], datetime] = {}
        self.arrived = 0

    async def add(self, items: list[InboxItem]) -> None:
        for item in items:
            if item.id in self.items or any(
                (i.source.event_id, i.recipient) == (item.source.event_id, item.recipient)
                for i in self.items.values()
            ):
                continue
            self.arrived += 1
            self.items[item.id] = dataclasses.replace(item, cursor=Cursor(0, self.arrived))

    def _as_read_by(self, username: str, item: InboxItem) -> InboxItem:
        return dataclasses.replace(item, read_at=self.reads.get((username, item.id)))

    def _seen(self, audience: Audience, keep: InboxFilter) -> list[InboxItem]:
        found = [self._as_read_by(audience.username, i) for i in self.items.values() if audience.sees(i)]
        return [i for i in found if keep.keeps(i)]

    async def search(
        self, audience: Audience, keep: InboxFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[InboxItem]:
        found = sorted(self._seen(audience, keep), key=lambda i: (i.source.occurred_at, i.id), reverse=True)
        if after is not None:
            found = [i for i in found if (i.source.occurred_at, i.id) < after]
        return found[:limit]

    async def visible(self, audience: Audience, item_ids: list[str]) -> set[str]:
        return {i for i in item_ids if i in self.items and audience.sees(self.items[i])}

    async def existing(self, item_ids: list[str]) -> set[str]:
        return {i for i in item_ids if i in self.items}

    async def mark_read(self, username: str, item_ids: list[str], now: datetime) -> int:
        fresh = [i for i in item_ids if i in self.items and (username, i) not in self.reads]
        for item_id in fresh:
            self.reads[(username, item_id)] = now
        return len(fresh)

    async def mark_matching_read(self, audience: Audience, keep: InboxFilter, now: datetime) -> int:
        unread = [i.id for i in self._seen(audience, keep) if i.read_at is None]
        return await self.mark_read(audience.username, unread, now)

    async def cursor_of(self, audience: Audience, item_id: str) -> Cursor | None:
        item = self.items.get(item_id)
        return item.cursor if item is not None and audience.sees(item) else None

    async def horizon(self) -> Cursor:
        return Cursor(0, self.arrived)

    async def arrived_after(
        self, audience: Audience, keep: InboxFilter, cursor: Cursor, limit: int
    ) -> tuple[list[InboxItem], Cursor]:
        found = sorted(
            (i for i in self._seen(audience, keep) if i.cursor is not None and i.cursor > cursor),
            key=lambda i: i.cursor or cursor,
        )[:limit]
        last = found[-1].cursor if len(found) == limit else None
        return found, last or max(cursor, Cursor(0, self.arrived))


class FakeTaskingUnitOfWork(FakeUnitOfWorkBase):
    def __init__(self) -> None:
        super().__init__()
        self.referral_changes = FakeReferralChangeRepository()
        self.jobs = FakeJobRepository(self, self.referral_changes)
        self.inbox = FakeInboxRepository()

    async def commit(self) -> None:
        self.referral_changes.commit()
        await super().commit()

    async def rollback(self) -> None:
        self.referral_changes.pending = []
        await super().rollback()

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)
