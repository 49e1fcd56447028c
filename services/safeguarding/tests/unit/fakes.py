import copy
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from toex.safeguarding.events.v1 import events_pb2
from toex_common.events import EventEnvelope
from toex_common.testing.fakes import FakeUnitOfWorkBase
from toex_kernel.regions import Region
from toex_safeguarding.adapters import integration
from toex_safeguarding.domain.identity import IdentityChange
from toex_safeguarding.domain.model import Referral
from toex_safeguarding.domain.values import Concern
from toex_safeguarding.service_layer.ports import OpenReferralExists, OverdueRow, ReferralQuery


class FakeReferralRepository:
    """Stores copies, holds the open-referral keys like the unique index does."""

    def __init__(self, uow: FakeUnitOfWorkBase) -> None:
        self.referrals: dict[str, Referral] = {}
        self.keys: dict[tuple[Region, str, Concern], str] = {}
        self.uow = uow

    def _store(self, referral: Referral) -> None:
        stored = copy.deepcopy(referral)
        stored.events = []
        self.referrals[referral.id] = stored

    def _claim(self, referral: Referral) -> None:
        wanted = (
            {(referral.region, referral.subject.entity_id, c) for c in referral.concerns}
            if referral.is_open
            else set()
        )
        for key in wanted:
            holder = self.keys.get(key)
            if holder is not None and holder != referral.id:
                raise OpenReferralExists(holder, key[2])
        for key in [k for k, v in self.keys.items() if v == referral.id and k not in wanted]:
            del self.keys[key]
        for key in wanted:
            self.keys[key] = referral.id

    async def add(self, referral: Referral) -> None:
        self._claim(referral)
        self._store(referral)
        self.uow.track(referral)

    async def save(self, referral: Referral) -> None:
        self._claim(referral)
        self._store(referral)
        self.uow.track(referral)

    async def get(self, referral_id: str, *, for_update: bool = False) -> Referral | None:
        found = self.referrals.get(referral_id)
        return copy.deepcopy(found) if found else None

    async def find_open(
        self, region: Region, subject_entity_id: str, concern: Concern | None
    ) -> Referral | None:
        for (r, s, c), holder in sorted(self.keys.items()):
            if r is region and s == subject_entity_id and (concern is None or c is concern):
                return copy.deepcopy(self.referrals[holder])
        return None

    async def open_about(self, region: Region, subjects: Collection[str]) -> list[Referral]:
        ids = {holder for (r, s, _), holder in self.keys.items() if r is region and s in subjects}
        found = [self.referrals[i] for i in ids if self.referrals[i].is_open]
        return [copy.deepcopy(r) for r in sorted(found, key=lambda r: (r.created_at, r.id))]

    async def search(
        self, query: ReferralQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[Referral]:
        found = []
        for r in sorted(self.referrals.values(), key=lambda r: (r.created_at, r.id), reverse=True):
            if query.regions is not None and r.region not in query.regions:
                continue
            if query.states and r.state not in query.states:
                continue
            if query.linked_job and r.linked_job != query.linked_job:
                continue
            if query.overdue_at and not r.is_overdue(query.overdue_at):
                continue
            if after and not (r.created_at, r.id) < after:
                continue
            found.append(copy.deepcopy(r))
        return found[:limit]

    async def overdue(
        self, regions: frozenset[Region] | None, now: datetime, limit: int, after: tuple[datetime, str] | None
    ) -> tuple[list[OverdueRow], int]:
        rows = [
            OverdueRow(copy.deepcopy(r), c)
            for r in self.referrals.values()
            if regions is None or r.region in regions
            for c in r.clocks
            if c.is_overdue(now)
        ]
        rows.sort(key=lambda row: (row.clock.due_at, row.referral.id))
        total = len(rows)
        if after:
            rows = [row for row in rows if (row.clock.due_at, row.referral.id) > after]
        return rows[:limit], total

    async def to_escalate(self, now: datetime, limit: int) -> list[Referral]:
        return [copy.deepcopy(r) for r in self.referrals.values() if r.is_overdue(now)][:limit]


class FakeIdentityLog:
    """Identity changes and aliases in memory, per region, as the tables hold them."""

    def __init__(self) -> None:
        self.changes: dict[tuple[Region, str], IdentityChange] = {}
        self.held_aliases: dict[tuple[Region, str], tuple[str, str]] = {}
        self.batch_lookups = 0

    async def claim(self, region: Region, change: IdentityChange) -> bool:
        if (region, change.key) in self.changes:
            return False
        self.changes[region, change.key] = copy.deepcopy(change)
        return True

    async def get(self, region: Region, key: str) -> IdentityChange | None:
        found = self.changes.get((region, key))
        return copy.deepcopy(found) if found else None

    async def save(self, region: Region, change: IdentityChange) -> None:
        assert (region, change.key) in self.changes, "saved before it was claimed"
        self.changes[region, change.key] = copy.deepcopy(change)

    async def undoer_of(self, region: Region, key: str) -> str | None:
        return next((c.key for (r, _), c in self.changes.items() if r is region and c.undoes == key), None)

    async def alias(self, region: Region, alias: str) -> str | None:
        found = self.held_aliases.get((region, alias))
        return found[0] if found else None

    async def aliases(self, region: Region, aliases: Collection[str]) -> dict[str, str]:
        self.batch_lookups += 1
        return {a: found[0] for a in aliases if (found := self.held_aliases.get((region, a)))}

    async def add_alias(self, region: Region, alias: str, subject: str, change: str) -> None:
        self.held_aliases[region, alias] = (subject, change)

    async def drop_aliases(self, region: Region, change: str) -> None:
        for key in [k for k, (_, c) in self.held_aliases.items() if k[0] is region and c == change]:
            del self.held_aliases[key]


class FakeSafeguardingUnitOfWork(FakeUnitOfWorkBase):
    def __init__(self) -> None:
        super().__init__()
        self.referrals = FakeReferralRepository(self)
        self.identity = FakeIdentityLog()

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)

    def published(self) -> list[tuple[str, EventEnvelope, Any]]:
        """The events of committed work: (short type, envelope, message)."""
        found = []
        for e in self.committed_events:
            kind = e.event_type.rsplit(".", 1)[-1]
            message: Message = getattr(events_pb2, kind).FromString(e.payload)
            found.append((kind, e, message))
        return found


class FakeJobs:
    """Tasking's jobs as a caller sees them: those in `visible_jobs`."""

    def __init__(self, *visible_jobs: str) -> None:
        self.visible_jobs = set(visible_jobs)

    async def visible(self, job: str, credentials: tuple[tuple[str, str], ...]) -> bool:
        return job in self.visible_jobs
