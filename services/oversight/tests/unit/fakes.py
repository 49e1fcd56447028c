"""Hand-written fakes of the oversight ports: the read model in memory, and a reader that sums it
as the PostgreSQL reader does (by day, whatever the grain)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from toex_kernel.regions import Region
from toex_oversight.domain.model import Deadline, Figure, JobRecord, Key, Reconciliation, ReferralRecord
from toex_oversight.domain.overview import OverviewQuery, Tallies, sum_counts


class FakeRecords:
    def __init__(self) -> None:
        self.stored: dict[str, Any] = {}

    async def get(self, name: str, region: Region) -> Any:
        return self.stored.get(name)

    def put(self, record: Any) -> None:
        self.stored[getattr(record, "job", None) or record.referral] = record


class FakeCounters:
    def __init__(self) -> None:
        self.counts: dict[Key, int] = defaultdict(int)

    def add(self, delta: Mapping[Key, int]) -> None:
        for key, count in delta.items():
            self.counts[key] += count

    def nonzero(self) -> dict[Key, int]:
        return {key: n for key, n in self.counts.items() if n}


class FakeDeadlines:
    def __init__(self) -> None:
        self.open: dict[tuple[str, str, str], Deadline] = {}

    def replace(self, old: Iterable[Deadline], new: Iterable[Deadline]) -> None:
        for deadline in old:
            self.open.pop(deadline.key, None)
        for deadline in new:
            self.open[deadline.key] = deadline


class FakeReconciliations:
    def __init__(self) -> None:
        self.newest: dict[Region, Reconciliation] = {}

    def offer(self, reconciliation: Reconciliation) -> None:
        if reconciliation.newer_than(self.newest.get(reconciliation.region)):
            self.newest[reconciliation.region] = reconciliation


class FakeActivity:
    def __init__(self) -> None:
        self.seen: dict[str, tuple[int, datetime]] = {}

    def saw(self, region: Region, domain: str, occurred_at: datetime) -> None:
        count, latest = self.seen.get(region.value, (0, occurred_at))
        self.seen[region.value] = (count + 1, max(latest, occurred_at))


class FakeOversightUnitOfWork:
    """One read model for every unit of work the test opens (commits are counted)."""

    def __init__(self) -> None:
        self.jobs = FakeRecords()
        self.referrals = FakeRecords()
        self.counters = FakeCounters()
        self.deadlines = FakeDeadlines()
        self.reconciliations = FakeReconciliations()
        self.activity = FakeActivity()
        self.commits = 0

    async def __aenter__(self) -> FakeOversightUnitOfWork:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def commit(self) -> None:
        self.commits += 1

    def job_records(self) -> list[JobRecord]:
        return list(self.jobs.stored.values())

    def referral_records(self) -> list[ReferralRecord]:
        return list(self.referrals.stored.values())


class FakeReader:
    def __init__(self, uow: FakeOversightUnitOfWork) -> None:
        self.uow = uow
        self.queries: list[OverviewQuery] = []

    async def tallies(self, query: OverviewQuery) -> Tallies:
        self.queries.append(query)
        wanted = {r.value for r in query.regions}
        period = query.period
        rows = []
        for key, n in self.uow.counters.counts.items():
            if not period.first <= key.day <= period.last:
                continue
            if key.region not in wanted and not (
                key.figure == Figure.JOB_TAKEN_BY.value and key.value in wanted
            ):
                continue
            if query.force and (key.force != query.force or not key.figure.startswith("jobs.")):
                continue
            rows.append((key.region, key.figure, key.value, n))
        deadlines: dict[tuple[str, str], tuple[int, int]] = {}
        for deadline in self.uow.deadlines.open.values():
            if deadline.region not in wanted or not period.first <= deadline.cohort <= period.last:
                continue
            if query.force and (deadline.kind.value != "job" or deadline.force != query.force):
                continue
            due, overdue = deadlines.get((deadline.region, deadline.kind.value), (0, 0))
            late = deadline.due_at < query.now
            deadlines[(deadline.region, deadline.kind.value)] = (due + (not late), overdue + late)
        without = sum(
            n
            for key, n in self.uow.counters.counts.items()
            if query.force
            and key.region in wanted
            and key.force == ""
            and key.figure == Figure.JOB_STATE.value
            and period.first <= key.day <= period.last
        )
        days = [key.day for key, n in self.uow.counters.counts.items() if n]
        return Tallies(
            counts=sum_counts(rows),
            deadlines=deadlines,
            reconciliations={}
            if query.force
            else {r.value: c for r, c in self.uow.reconciliations.newest.items() if r.value in wanted},
            activity={r: a for r, a in self.uow.activity.seen.items() if r in wanted},
            jobs_without_force=without,
            first_counted=min(days) if days and query.open_start else None,
        )
