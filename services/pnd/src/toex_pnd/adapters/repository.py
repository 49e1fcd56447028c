"""PostgreSQL repositories of the PND sync service."""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, insert, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from toex_kernel.regions import Region

from toex_pnd.adapters.tables import (
    intelligence,
    pnd_searches,
    reconciliation_items,
    reconciliations,
    submissions,
)
from toex_pnd.domain.model import (
    Aged,
    Grading,
    IntelligenceRecord,
    Kind,
    Link,
    Operation,
    Reason,
    RegionFigures,
    Report,
    SearchRow,
    Submission,
    SubmissionState,
    SyncState,
)
from toex_pnd.service_layer.ports import QueueStatus, RecordQuery, ReportItem

SHARDS = 64
_SENDER_LOCK = 0x504E44  # "PND": advisory lock class of the senders
CATEGORIES = ("MISSING", "STALE", "REJECTED", "HELD", "CONFLICT")


def shard_of(record_id: str) -> int:
    return zlib.crc32(record_id.encode()) % SHARDS


def _record_row(record: IntelligenceRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "region": record.region.value,
        "kind": record.kind.value,
        "entity": record.entity,
        "grading": record.grading.to_json(),
        "links": [link.to_json() for link in record.links],
        "version": record.version,
        "created_by": record.created_by,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "deleted_at": record.deleted_at,
        "sync_state": record.sync_state.value,
        "pnd_id": record.pnd_id,
        "pnd_version": record.pnd_version,
        "rejection": [r.to_json() for r in record.rejection],
        "released_by": record.released_by,
        "ever_sent": record.ever_sent,
        "job": record.job,
    }


def _record(row: Any) -> IntelligenceRecord:
    return IntelligenceRecord(
        id=row.id,
        region=Region(row.region),
        kind=Kind(row.kind),
        entity=row.entity,
        grading=Grading.from_json(row.grading),
        links=[Link(d["target"], d["type"], d.get("description", "")) for d in row.links],
        version=row.version,
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        deleted_at=row.deleted_at,
        sync_state=SyncState(row.sync_state),
        pnd_id=row.pnd_id,
        pnd_version=row.pnd_version,
        rejection=tuple(Reason.from_json(r) for r in row.rejection),
        released_by=row.released_by,
        ever_sent=row.ever_sent,
        job=row.job,
    )


def _submission_row(s: Submission) -> dict[str, Any]:
    return {
        "submission_id": s.submission_id,
        "record_id": s.record_id,
        "region": s.region.value,
        "version": s.version,
        "shard": shard_of(s.record_id),
        "operation": s.operation.value,
        "state": s.state.value,
        "payload": s.payload,
        "queued_at": s.queued_at,
        "next_attempt_at": s.next_attempt_at,
        "attempts": s.attempts,
        "last_error": s.last_error,
        "answered_at": s.answered_at,
        "pnd_version": s.pnd_version,
        "reasons": [r.to_json() for r in s.reasons],
        "released_by": s.released_by,
        "submitted_by": s.submitted_by,
    }


def _submission(row: Any) -> Submission:
    return Submission(
        submission_id=row.submission_id,
        record_id=row.record_id,
        region=Region(row.region),
        version=row.version,
        operation=Operation(row.operation),
        state=SubmissionState(row.state),
        payload=row.payload,
        queued_at=row.queued_at,
        next_attempt_at=row.next_attempt_at,
        attempts=row.attempts,
        last_error=row.last_error,
        answered_at=row.answered_at,
        pnd_version=row.pnd_version,
        reasons=tuple(Reason.from_json(r) for r in row.reasons),
        released_by=row.released_by,
        submitted_by=row.submitted_by,
    )


class SqlRecordRepository:
    def __init__(
        self, session: AsyncSession, track: Callable[[IntelligenceRecord], None] = lambda _: None
    ) -> None:
        self.session = session
        # The unit of work's: a stored record's domain events are published at its commit.
        self._track = track

    async def add(self, record: IntelligenceRecord) -> None:
        await self.session.execute(insert(intelligence).values(**_record_row(record)))
        self._track(record)

    async def get(self, record_id: str, *, for_update: bool = False) -> IntelligenceRecord | None:
        query = select(intelligence).where(intelligence.c.id == record_id)
        if for_update:
            query = query.with_for_update()
        row = (await self.session.execute(query)).first()
        return _record(row) if row else None

    async def get_many(
        self, record_ids: Sequence[str], *, for_update: bool = False
    ) -> dict[str, IntelligenceRecord]:
        query = (
            select(intelligence).where(intelligence.c.id.in_(list(record_ids))).order_by(intelligence.c.id)
        )
        if for_update:
            query = query.with_for_update()
        return {row.id: _record(row) for row in await self.session.execute(query)}

    async def save(self, record: IntelligenceRecord) -> None:
        await self.save_many([record])

    async def save_many(self, records: Sequence[IntelligenceRecord]) -> None:
        """Write the fields that change after creation, for many records in one round trip;
        their events are published in the order of `records`."""
        if not records:
            return
        stmt = (
            update(intelligence)
            .where(intelligence.c.id == bindparam("b_id"))
            .values(
                entity=bindparam("b_entity", type_=JSONB),
                grading=bindparam("b_grading", type_=JSONB),
                links=bindparam("b_links", type_=JSONB),
                version=bindparam("b_version"),
                updated_at=bindparam("b_updated_at"),
                deleted_at=bindparam("b_deleted_at"),
                sync_state=bindparam("b_sync_state"),
                pnd_id=bindparam("b_pnd_id"),
                pnd_version=bindparam("b_pnd_version"),
                rejection=bindparam("b_rejection", type_=JSONB),
                released_by=bindparam("b_released_by"),
                ever_sent=bindparam("b_ever_sent"),
            )
        )
        params = []
        for record in records:
            self._track(record)
            row = _record_row(record)
            params.append(
                {
                    f"b_{k}": v
                    for k, v in row.items()
                    if k not in ("region", "kind", "created_by", "created_at", "job")
                }
            )
        await self.session.execute(stmt, params)

    async def search(
        self, query: RecordQuery, limit: int, after: tuple[datetime, str] | None
    ) -> list[IntelligenceRecord]:
        c = intelligence.c
        stmt = select(intelligence)
        if query.regions is not None:
            stmt = stmt.where(c.region.in_([r.value for r in query.regions]))
        if query.sync_states:
            stmt = stmt.where(c.sync_state.in_([s.value for s in query.sync_states]))
        if query.kind is not None:
            stmt = stmt.where(c.kind == query.kind.value)
        if query.job:
            # The first condition lets the partial index intelligence_job_updated serve a bound job.
            stmt = stmt.where(c.job != "", c.job == query.job)
        if not query.show_deleted:
            stmt = stmt.where(c.deleted_at.is_(None))
        if after is not None:
            stmt = stmt.where(tuple_(c.updated_at, c.id) < tuple_(after[0], after[1]))
        stmt = stmt.order_by(c.updated_at.desc(), c.id.desc()).limit(limit)
        return [_record(row) for row in await self.session.execute(stmt)]

    async def state_counts(self, regions: frozenset[Region] | None) -> dict[SyncState, int]:
        stmt = select(intelligence.c.sync_state, func.count()).group_by(intelligence.c.sync_state)
        if regions is not None:
            stmt = stmt.where(intelligence.c.region.in_([r.value for r in regions]))
        return {SyncState(state): int(count) for state, count in await self.session.execute(stmt)}


class SqlSubmissionRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, submission: Submission) -> None:
        await self.session.execute(insert(submissions).values(**_submission_row(submission)))

    async def save(self, items: Sequence[Submission]) -> None:
        if not items:
            return
        stmt = (
            update(submissions)
            .where(submissions.c.submission_id == bindparam("b_id"))
            .values(
                state=bindparam("b_state"),
                next_attempt_at=bindparam("b_next"),
                attempts=bindparam("b_attempts"),
                last_error=bindparam("b_error"),
                answered_at=bindparam("b_answered"),
                pnd_version=bindparam("b_pnd_version"),
                reasons=bindparam("b_reasons", type_=JSONB),
                released_by=bindparam("b_released_by"),
            )
        )
        await self.session.execute(
            stmt,
            [
                {
                    "b_id": s.submission_id,
                    "b_state": s.state.value,
                    "b_next": s.next_attempt_at,
                    "b_attempts": s.attempts,
                    "b_error": s.last_error,
                    "b_answered": s.answered_at,
                    "b_pnd_version": s.pnd_version,
                    "b_reasons": [r.to_json() for r in s.reasons],
                    "b_released_by": s.released_by,
                }
                for s in items
            ],
        )

    async def open_for(self, record_id: str) -> list[Submission]:
        rows = await self.session.execute(
            select(submissions)
            .where(submissions.c.record_id == record_id, submissions.c.state.in_(["QUEUED", "HELD"]))
            .order_by(submissions.c.version)
        )
        return [_submission(row) for row in rows]

    async def history(self, record_id: str) -> list[Submission]:
        rows = await self.session.execute(
            select(submissions).where(submissions.c.record_id == record_id).order_by(submissions.c.version)
        )
        return [_submission(row) for row in rows]

    async def lock_sender(self, sender: int) -> bool:
        result = await self.session.execute(
            text("SELECT pg_try_advisory_xact_lock(:cls, :sender)"), {"cls": _SENDER_LOCK, "sender": sender}
        )
        return bool(result.scalar_one())

    async def due(self, sender: int, senders: int, limit: int, now: datetime) -> list[Submission]:
        s = submissions.alias("s")
        earlier = submissions.alias("e")
        blocked = (
            select(earlier.c.submission_id)
            .where(
                earlier.c.record_id == s.c.record_id,
                earlier.c.version < s.c.version,
                earlier.c.state.in_(["QUEUED", "HELD"]),
            )
            .exists()
        )
        stmt = (
            select(s)
            .where(
                s.c.state == "QUEUED",
                s.c.next_attempt_at <= now,
                (s.c.shard % senders) == sender,
                ~blocked,
            )
            .order_by(s.c.next_attempt_at, s.c.queued_at, s.c.version)
            .limit(limit)
        )
        return [_submission(row) for row in await self.session.execute(stmt)]

    async def status(self, regions: frozenset[Region] | None, now: datetime) -> QueueStatus:
        c = submissions.c
        stmt = select(
            func.count().filter(c.state == "QUEUED"),
            func.count().filter(c.state == "HELD"),
            func.count().filter(and_(c.state == "QUEUED", c.attempts > 0)),
            func.min(c.queued_at).filter(c.state == "QUEUED"),
        ).where(c.state.in_(["QUEUED", "HELD"]))
        error_stmt = (
            select(c.last_error)
            .where(c.state == "QUEUED", c.last_error != "")
            .order_by(c.next_attempt_at.desc())
            .limit(1)
        )
        if regions is not None:
            codes = [r.value for r in regions]
            stmt = stmt.where(c.region.in_(codes))
            error_stmt = error_stmt.where(c.region.in_(codes))
        queued, held, retrying, oldest = (await self.session.execute(stmt)).one()
        last_error = (await self.session.execute(error_stmt)).scalar_one_or_none() or ""
        return QueueStatus(int(queued), int(held), int(retrying), oldest, last_error)


class SqlSearchRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, search: SearchRow) -> None:
        await self.session.execute(
            insert(pnd_searches).values(
                id=search.id,
                region=search.region.value,
                kind=search.kind,
                criteria=search.criteria,
                requested_by=search.requested_by,
                purpose=search.purpose,
                searched_at=search.searched_at,
                result_count=search.result_count,
                truncated=search.truncated,
                job=search.job,
            )
        )


# Classification of every local record against the PND's holdings. The first matching rule
# decides: held and rejected are states of the newest local version; conflict means the PND is
# ahead; a record deleted before anything reached the PND needs nothing there.
_CLASSIFY = """
CREATE TEMP TABLE recon_classified ON COMMIT DROP AS
SELECT i.id, i.region, i.version, i.updated_at,
       coalesce(h.pnd_version, 0) AS pnd_version,
       CASE
         WHEN i.sync_state = 'HELD' THEN 'HELD'
         WHEN i.sync_state = 'REJECTED' THEN 'REJECTED'
         WHEN h.pnd_version > i.version OR i.sync_state = 'CONFLICT' THEN 'CONFLICT'
         WHEN h.pnd_version IS NULL AND i.deleted_at IS NOT NULL THEN NULL
         WHEN h.pnd_version IS NULL THEN 'MISSING'
         WHEN h.pnd_version = i.version AND h.deleted = (i.deleted_at IS NOT NULL) THEN NULL
         ELSE 'STALE'
       END AS category
FROM intelligence i
LEFT JOIN pnd_holdings h ON h.source_ref = 'regions/' || i.region || '/intelligence/' || i.id
"""


class SqlReconciliationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def load_holdings(self, chunks: AsyncIterator[bytes]) -> int:
        await self.session.execute(
            text(
                "CREATE TEMP TABLE pnd_holdings (source_ref text, pnd_version bigint, deleted boolean,"
                " pnd_id text) ON COMMIT DROP"
            )
        )
        connection = await self.session.connection()
        raw = await connection.get_raw_connection()
        driver: Any = raw.driver_connection
        status = await driver.copy_to_table("pnd_holdings", source=_lines(chunks), format="text")
        await self.session.execute(text("ANALYZE pnd_holdings"))
        return int(str(status).rsplit(" ", 1)[-1]) if status else 0

    async def classify(self, report_id: str, started_at: datetime) -> list[RegionFigures]:
        await self.session.execute(text(_CLASSIFY))
        await self.session.execute(
            text(
                "INSERT INTO reconciliation_items (reconciliation_id, record_id, region, category,"
                " local_version, pnd_version, changed_at)"
                " SELECT :rid, id, region, category, version, pnd_version, updated_at"
                " FROM recon_classified WHERE category IS NOT NULL"
            ),
            {"rid": report_id},
        )
        rows = await self.session.execute(
            text(
                "SELECT region, coalesce(category, '') AS category, count(*) AS n, min(updated_at) AS oldest,"
                " count(*) FILTER (WHERE updated_at < :day_ago) AS old"
                " FROM recon_classified GROUP BY region, category"
            ),
            {"day_ago": started_at - timedelta(days=1)},
        )
        figures: dict[Region, RegionFigures] = {}
        for row in rows:
            region = Region(row.region)
            entry = figures.setdefault(region, RegionFigures(region))
            entry.local_records += int(row.n)
            if not row.category:
                entry.in_sync += int(row.n)
            else:
                age = max(0.0, (started_at - row.oldest).total_seconds())
                entry.categories[row.category] = Aged(int(row.n), age, int(row.old))
        return [figures[r] for r in sorted(figures, key=lambda r: r.value)]

    async def add(self, report: Report) -> None:
        await self.session.execute(
            insert(reconciliations).values(
                id=report.id,
                scheduled=report.scheduled,
                requested_by=report.requested_by,
                started_at=report.started_at,
                completed_at=report.completed_at,
                pnd_records=report.pnd_records,
                summary=[f.to_json() for f in report.regions],
            )
        )

    async def get(self, report_id: str | None) -> Report | None:
        stmt = select(reconciliations)
        if report_id:
            stmt = stmt.where(reconciliations.c.id == report_id)
        else:
            stmt = stmt.order_by(reconciliations.c.completed_at.desc()).limit(1)
        row = (await self.session.execute(stmt)).first()
        if row is None:
            return None
        return Report(
            id=row.id,
            scheduled=row.scheduled,
            requested_by=row.requested_by,
            started_at=row.started_at,
            completed_at=row.completed_at,
            pnd_records=row.pnd_records,
            regions=[RegionFigures.from_json(f) for f in row.summary],
        )

    async def items(
        self,
        report_id: str,
        regions: frozenset[Region] | None,
        category: str | None,
        limit: int,
        after: tuple[datetime, str] | None,
    ) -> list[ReportItem]:
        c = reconciliation_items.c
        stmt = select(reconciliation_items).where(c.reconciliation_id == report_id)
        if regions is not None:
            stmt = stmt.where(c.region.in_([r.value for r in regions]))
        if category:
            stmt = stmt.where(c.category == category)
        if after is not None:
            stmt = stmt.where(
                or_(c.changed_at > after[0], and_(c.changed_at == after[0], c.record_id > after[1]))
            )
        stmt = stmt.order_by(c.changed_at, c.record_id).limit(limit)
        return [
            ReportItem(
                row.record_id,
                Region(row.region),
                row.category,
                row.local_version,
                row.pnd_version,
                row.changed_at,
            )
            for row in await self.session.execute(stmt)
        ]


async def _lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if chunk:
            yield chunk
