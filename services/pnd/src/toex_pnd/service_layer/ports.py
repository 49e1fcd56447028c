"""The ports the handlers depend on. Adapters implement them; unit tests fake them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from toex_common.uow import UnitOfWork
from toex_kernel.grants import GrantReader
from toex_kernel.regions import Region

from toex_pnd.domain.events import DomainEvent
from toex_pnd.domain.model import (
    Answer,
    IntelligenceRecord,
    Kind,
    RegionFigures,
    Report,
    SearchRow,
    Submission,
    SyncState,
)


class PndUnavailable(Exception):
    """The PND could not be reached or failed the request: try again later."""


@dataclass(frozen=True)
class SearchAnswer:
    results: list[dict[str, Any]]  # source records in the simulator's/PND's JSON form
    truncated: bool


class PndGateway(Protocol):
    """The one interface to the PND, whatever the transport."""

    async def submit(self, lines: Sequence[dict[str, Any]]) -> list[Answer]:
        """Send bulk-format lines; the PND's answer for each. Raises PndUnavailable."""
        ...

    async def search(self, kind: str, criteria: dict[str, Any], max_results: int) -> SearchAnswer: ...

    def holdings(self) -> AsyncIterator[bytes]:
        """What the PND holds for the platform, as TSV chunks (source_ref, version, deleted, pnd_id)."""
        ...


@dataclass(frozen=True)
class RecordQuery:
    regions: frozenset[Region] | None  # None: every region
    sync_states: frozenset[SyncState]
    kind: Kind | None
    show_deleted: bool
    job: str = ""  # only the records attached to this job ("": any)


class RecordRepository(Protocol):
    """Stores records; what a stored record recorded (`events`) is published at commit."""

    async def add(self, record: IntelligenceRecord) -> None: ...
    async def get(self, record_id: str, *, for_update: bool = False) -> IntelligenceRecord | None: ...
    async def get_many(
        self, record_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, IntelligenceRecord]: ...
    async def save(self, record: IntelligenceRecord) -> None: ...
    async def save_many(self, records: Sequence[IntelligenceRecord]) -> None: ...
    async def search(
        self, query: RecordQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[IntelligenceRecord]: ...
    async def state_counts(self, regions: frozenset[Region] | None) -> dict[SyncState, int]: ...


@dataclass(frozen=True)
class QueueStatus:
    queued: int
    held: int
    retrying: int
    oldest_queued_at: datetime | None
    last_error: str


class SubmissionRepository(Protocol):
    async def add(self, submission: Submission) -> None: ...
    async def save(self, submissions: Sequence[Submission]) -> None: ...
    async def open_for(self, record_id: str) -> list[Submission]: ...
    async def history(self, record_id: str) -> list[Submission]: ...
    async def lock_sender(self, sender: int) -> bool:
        """Take this sender's lock for the transaction; False when another process holds it."""
        ...

    async def due(self, sender: int, senders: int, limit: int, now: datetime) -> list[Submission]:
        """Queued submissions due now that head their record's queue, oldest first."""
        ...

    async def status(self, regions: frozenset[Region] | None, now: datetime) -> QueueStatus: ...


@dataclass(frozen=True)
class ReportItem:
    record_id: str
    region: Region
    category: str
    local_version: int
    pnd_version: int
    changed_at: datetime


class ReconciliationRepository(Protocol):
    async def load_holdings(self, chunks: AsyncIterator[bytes]) -> int:
        """Load the PND's holdings for this transaction; how many rows."""
        ...

    async def classify(self, report_id: str, started_at: datetime) -> list[RegionFigures]:
        """Compare local records with the loaded holdings; store the out-of-step items."""
        ...

    async def add(self, report: Report) -> None: ...
    async def get(self, report_id: str | None) -> Report | None:
        """A report by id, or the newest when None."""
        ...

    async def items(
        self,
        report_id: str,
        regions: frozenset[Region] | None,
        category: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[ReportItem]: ...


class SearchRepository(Protocol):
    async def add(self, search: SearchRow) -> None: ...


class PndUnitOfWork(UnitOfWork, Protocol):
    records: RecordRepository
    submissions: SubmissionRepository
    reconciliations: ReconciliationRepository
    searches: SearchRepository

    @property
    def grants(self) -> GrantReader: ...

    def record(self, event: DomainEvent) -> None:
        """Publish at commit an event of no one record (a search's answer, a reconciliation)."""
        ...

    async def __aenter__(self) -> PndUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
