"""What the handlers need of the outside world, as Protocols (adapters implement them; unit
tests use fakes)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any, Protocol

from toex_kernel.regions import Region

from toex_oversight.domain.model import Deadline, JobRecord, Key, Reconciliation, ReferralRecord
from toex_oversight.domain.overview import OverviewQuery, Tallies


class JobRecords(Protocol):
    async def get(self, job: str, region: Region) -> JobRecord | None: ...
    def put(self, record: JobRecord) -> None: ...


class ReferralRecords(Protocol):
    async def get(self, referral: str, region: Region) -> ReferralRecord | None: ...
    def put(self, record: ReferralRecord) -> None: ...


class Counters(Protocol):
    def add(self, delta: Mapping[Key, int]) -> None:
        """Move the counters by `delta` (kept per day and per month), at commit."""
        ...


class Deadlines(Protocol):
    def replace(self, old: Iterable[Deadline], new: Iterable[Deadline]) -> None:
        """A record's open deadlines were `old` and are now `new`."""
        ...


class Reconciliations(Protocol):
    def offer(self, reconciliation: Reconciliation) -> None:
        """Keep it as its region's newest unless a newer one is kept."""
        ...


class Activity(Protocol):
    def saw(self, region: Region, domain: str, occurred_at: datetime) -> None:
        """One more of `region`'s events counted, of the producer `domain` (tasking, ...)."""
        ...


class OversightUnitOfWork(Protocol):
    jobs: JobRecords
    referrals: ReferralRecords
    counters: Counters
    deadlines: Deadlines
    reconciliations: Reconciliations
    activity: Activity

    async def __aenter__(self) -> Any: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def commit(self) -> None: ...


class OverviewReader(Protocol):
    async def tallies(self, query: OverviewQuery) -> Tallies: ...


Clock = Callable[[], datetime]
