"""Hand-written fakes of the PND sync ports."""

from __future__ import annotations

import copy
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from toex_common.events import EventEnvelope
from toex_common.testing.fakes import FakeUnitOfWorkBase
from toex_pnd.adapters import integration
from toex_pnd.domain.model import (
    Answer,
    IntelligenceRecord,
    Outcome,
    RegionFigures,
    Report,
    SearchRow,
    Submission,
    SubmissionState,
)
from toex_pnd.service_layer.ports import PndUnavailable, RecordQuery, SearchAnswer


class FakeRecords:
    """Stores copies without their events; tracks what it stores, like the real repository."""

    def __init__(self, track: Callable[[IntelligenceRecord], None]) -> None:
        self.rows: dict[str, IntelligenceRecord] = {}
        self._track = track

    def _store(self, record: IntelligenceRecord) -> None:
        stored = copy.copy(record)
        stored.events = []
        self.rows[record.id] = copy.deepcopy(stored)
        self._track(record)

    async def add(self, record: IntelligenceRecord) -> None:
        self._store(record)

    async def get(self, record_id: str, *, for_update: bool = False) -> IntelligenceRecord | None:
        found = self.rows.get(record_id)
        return copy.deepcopy(found) if found else None

    async def get_many(
        self, record_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, IntelligenceRecord]:
        return {i: copy.deepcopy(self.rows[i]) for i in record_ids if i in self.rows}

    async def save(self, record: IntelligenceRecord) -> None:
        self._store(record)

    async def save_many(self, records: Sequence[IntelligenceRecord]) -> None:
        for record in records:
            await self.save(record)

    async def search(
        self, query: RecordQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[IntelligenceRecord]:
        found = [
            r
            for r in self.rows.values()
            if (query.regions is None or r.region in query.regions)
            and (not query.sync_states or r.sync_state in query.sync_states)
            and (query.kind is None or r.kind is query.kind)
            and (query.show_deleted or not r.deleted)
            and (not query.job or r.job == query.job)
            and (after is None or (r.updated_at, r.id) < after)
        ]
        found.sort(key=lambda r: (r.updated_at, r.id), reverse=True)
        return [copy.deepcopy(r) for r in found[:limit]]


class FakeSubmissions:
    def __init__(self) -> None:
        self.rows: dict[str, Submission] = {}

    async def add(self, submission: Submission) -> None:
        self.rows[submission.submission_id] = copy.deepcopy(submission)

    async def save(self, items: Sequence[Submission]) -> None:
        for item in items:
            self.rows[item.submission_id] = copy.deepcopy(item)

    async def open_for(self, record_id: str) -> list[Submission]:
        return sorted(
            (copy.deepcopy(s) for s in self.rows.values() if s.record_id == record_id and s.state.open),
            key=lambda s: s.version,
        )

    async def history(self, record_id: str) -> list[Submission]:
        return sorted(
            (copy.deepcopy(s) for s in self.rows.values() if s.record_id == record_id),
            key=lambda s: s.version,
        )

    async def lock_sender(self, sender: int) -> bool:
        return True

    async def due(self, sender: int, senders: int, limit: int, now: datetime) -> list[Submission]:
        heads: dict[str, Submission] = {}
        for s in sorted(self.rows.values(), key=lambda s: s.version):
            if s.state.open and s.record_id not in heads:
                heads[s.record_id] = s
        ready = [s for s in heads.values() if s.state is SubmissionState.QUEUED and s.next_attempt_at <= now]
        return [copy.deepcopy(s) for s in ready[:limit]]


class FakeSearches:
    def __init__(self) -> None:
        self.rows: list[SearchRow] = []

    async def add(self, search: SearchRow) -> None:
        self.rows.append(search)


class FakeReconciliations:
    """Classifies as told (`figures`); keeps the reports."""

    def __init__(self) -> None:
        self.figures: list[RegionFigures] = []
        self.reports: list[Report] = []

    async def load_holdings(self, chunks: AsyncIterator[bytes]) -> int:
        return sum([len(chunk.splitlines()) async for chunk in chunks])

    async def classify(self, report_id: str, started_at: datetime) -> list[RegionFigures]:
        return copy.deepcopy(self.figures)

    async def add(self, report: Report) -> None:
        self.reports.append(report)


class FakeUow(FakeUnitOfWorkBase):
    """Publishes what was recorded through the service's real mapping (`committed_events`)."""

    def __init__(self) -> None:
        super().__init__()
        self.records = FakeRecords(self.track)
        self.submissions = FakeSubmissions()
        self.searches = FakeSearches()
        self.reconciliations = FakeReconciliations()

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)


def accept(line: dict[str, Any]) -> Answer:
    return Answer(line["submission_id"], Outcome.ACCEPTED, "PND-1", line["record_version"])


class FakePnd:
    """Accepts everything (or answers with `answer`) unless told it is down; remembers what it
    was sent. Searches find `found`; the holdings report is `holding_chunks`."""

    def __init__(self) -> None:
        self.down = False
        self.batches: list[list[dict[str, Any]]] = []
        self.answer: Callable[[dict[str, Any]], Answer] = accept
        self.found = SearchAnswer([], False)
        self.holding_chunks: list[bytes] = [b""]

    async def submit(self, lines: Sequence[dict[str, Any]]) -> list[Answer]:
        if self.down:
            raise PndUnavailable("connection refused")
        self.batches.append(list(lines))
        return [self.answer(line) for line in lines]

    async def search(self, kind: str, criteria: dict[str, Any], max_results: int) -> SearchAnswer:
        return self.found

    async def holdings(self) -> AsyncIterator[bytes]:
        for chunk in self.holding_chunks:
            yield chunk
