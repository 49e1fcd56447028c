"""The job repository on PostgreSQL (SQLAlchemy Core; the aggregate is plain dataclasses)."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, delete, func, insert, or_, select, tuple_, update
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncSession
from toex_common.regions import Region

from toex_tasking.adapters.tables import job_assignees, job_notes, jobs
from toex_tasking.domain.model import (
    OPEN_STATES,
    WORKING_STATES,
    Assignee,
    Feedback,
    Handling,
    Job,
    JobState,
    JobType,
    Note,
    Priority,
)
from toex_tasking.service_layer.ports import JobQuery, ResearcherCount

_OPEN = [s.value for s in OPEN_STATES]

_ASSIGNEES_JSON = (
    select(
        func.json_agg(
            aggregate_order_by(
                func.json_build_object(
                    "username",
                    job_assignees.c.username,
                    "region",
                    job_assignees.c.region,
                    "assigned_at",
                    job_assignees.c.assigned_at,
                ),
                job_assignees.c.position,
            )
        )
    )
    .where(job_assignees.c.job_id == jobs.c.id)
    .scalar_subquery()
    .label("assignees_json")
)
_NOTES_JSON = (
    select(
        func.json_agg(
            aggregate_order_by(
                func.json_build_object(
                    "id",
                    job_notes.c.id,
                    "author",
                    job_notes.c.author,
                    "text",
                    job_notes.c.text,
                    "created_at",
                    job_notes.c.created_at,
                ),
                job_notes.c.created_at,
                job_notes.c.id,
            )
        )
    )
    .where(job_notes.c.job_id == jobs.c.id)
    .scalar_subquery()
    .label("notes_json")
)
_WORKING = [s.value for s in WORKING_STATES]


def _row(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "region": job.region.value,
        "requesting_unit": job.requesting_unit,
        "requesting_officer": job.requesting_officer,
        "operation_name": job.operation_name,
        "job_type": job.job_type.value,
        "priority": job.priority.value,
        "due_at": job.due_at,
        "description": job.description,
        "handling": job.handling.value,
        "state": job.state.value,
        "subject_entity_ids": job.subject_entity_ids,
        "product": job.product,
        "feedback_rating": job.feedback.rating if job.feedback else None,
        "feedback_comment": job.feedback.comment if job.feedback else None,
        "feedback_by": job.feedback.recorded_by if job.feedback else None,
        "feedback_at": job.feedback.recorded_at if job.feedback else None,
        "created_by": job.created_by,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "overdue_notified_for": job.overdue_notified_for,
    }


def _job(row: Any, assignees: list[Assignee], notes: list[Note]) -> Job:
    feedback = None
    if row.feedback_rating is not None:
        feedback = Feedback(
            row.feedback_rating, row.feedback_comment or "", row.feedback_by or "", row.feedback_at
        )
    return Job(
        id=row.id,
        region=Region(row.region),
        requesting_unit=row.requesting_unit,
        requesting_officer=row.requesting_officer,
        operation_name=row.operation_name,
        job_type=JobType(row.job_type),
        priority=Priority(row.priority),
        due_at=row.due_at,
        description=row.description,
        handling=Handling(row.handling),
        created_by=row.created_by,
        created_at=row.created_at,
        updated_at=row.updated_at,
        state=JobState(row.state),
        assignees=assignees,
        subject_entity_ids=list(row.subject_entity_ids or []),
        notes=notes,
        product=row.product,
        feedback=feedback,
        overdue_notified_for=row.overdue_notified_for,
    )


class SqlJobRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add(self, job: Job) -> None:
        await self.session.execute(insert(jobs).values(**_row(job)))
        await self._write_children(job)

    async def save(self, job: Job) -> None:
        row = _row(job)
        del row["id"]
        await self.session.execute(update(jobs).where(jobs.c.id == job.id).values(**row))
        await self.session.execute(delete(job_assignees).where(job_assignees.c.job_id == job.id))
        await self._write_children(job)

    async def _write_children(self, job: Job) -> None:
        if job.assignees:
            await self.session.execute(
                insert(job_assignees),
                [
                    {
                        "job_id": job.id,
                        "username": a.username,
                        "region": a.region.value,
                        "position": i,
                        "assigned_at": a.assigned_at,
                    }
                    for i, a in enumerate(job.assignees)
                ],
            )
        if job.new_notes:
            await self.session.execute(
                insert(job_notes),
                [
                    {
                        "job_id": job.id,
                        "id": n.id,
                        "author": n.author,
                        "text": n.text,
                        "created_at": n.created_at,
                    }
                    for n in job.new_notes
                ],
            )
            job.new_notes.clear()

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        # One round trip: the job with its assignees and notes aggregated as JSON.
        statement = select(jobs, _ASSIGNEES_JSON, _NOTES_JSON).where(jobs.c.id == job_id)
        if for_update:
            statement = statement.with_for_update(of=jobs)
        row = (await self.session.execute(statement)).first()
        if row is None:
            return None
        assignees = [
            Assignee(a["username"], Region(a["region"]), datetime.fromisoformat(a["assigned_at"]))
            for a in row.assignees_json or []
        ]
        notes = [
            Note(n["id"], n["author"], n["text"], datetime.fromisoformat(n["created_at"]))
            for n in row.notes_json or []
        ]
        return _job(row, assignees, notes)

    async def _assignees(self, job_ids: list[str]) -> dict[str, list[Assignee]]:
        found: dict[str, list[Assignee]] = defaultdict(list)
        if not job_ids:
            return found
        rows = (
            await self.session.execute(
                select(job_assignees)
                .where(job_assignees.c.job_id.in_(job_ids))
                .order_by(job_assignees.c.job_id, job_assignees.c.position)
            )
        ).all()
        for r in rows:
            found[r.job_id].append(Assignee(r.username, Region(r.region), r.assigned_at))
        return found

    async def search(self, query: JobQuery, limit: int, after: tuple[datetime, str] | None) -> list[Job]:
        conditions = []
        scope = []
        if query.regions is not None:
            scope.append(jobs.c.region.in_([r.value for r in query.regions]))
        if query.or_assigned_to:
            scope.append(
                jobs.c.id.in_(
                    select(job_assignees.c.job_id).where(job_assignees.c.username == query.or_assigned_to)
                )
            )
        if query.regions is not None or query.or_assigned_to:
            conditions.append(or_(*scope) if scope else jobs.c.id.is_(None))
        if query.states:
            conditions.append(jobs.c.state.in_([s.value for s in query.states]))
        if query.assignee:
            conditions.append(
                jobs.c.id.in_(
                    select(job_assignees.c.job_id).where(job_assignees.c.username == query.assignee)
                )
            )
        if query.due_before is not None:
            conditions.append(jobs.c.due_at < query.due_before)
        if after is not None:
            conditions.append(tuple_(jobs.c.created_at, jobs.c.id) < tuple_(*after))
        statement = (
            select(jobs)
            .where(and_(*conditions))
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
            .limit(limit)
        )
        rows = (await self.session.execute(statement)).all()
        assignees = await self._assignees([r.id for r in rows])
        return [_job(r, assignees.get(r.id, []), []) for r in rows]

    async def open_load(self, region: Region, now: datetime) -> tuple[list[ResearcherCount], int, int]:
        working = and_(jobs.c.state.in_(_WORKING))
        rows = (
            await self.session.execute(
                select(
                    job_assignees.c.username,
                    func.min(job_assignees.c.region).label("region"),
                    func.count().label("open_jobs"),
                    func.count(case((jobs.c.due_at < now, 1))).label("overdue_jobs"),
                )
                .join(jobs, jobs.c.id == job_assignees.c.job_id)
                .where(working, or_(job_assignees.c.region == region.value, jobs.c.region == region.value))
                .group_by(job_assignees.c.username)
            )
        ).all()
        counts = [ResearcherCount(r.username, Region(r.region), r.open_jobs, r.overdue_jobs) for r in rows]
        totals = (
            await self.session.execute(
                select(
                    func.count().label("open_jobs"),
                    func.count(case((jobs.c.state == JobState.RAISED.value, 1))).label("unassigned"),
                ).where(jobs.c.region == region.value, jobs.c.state.in_(_OPEN))
            )
        ).one()
        return counts, int(totals.unassigned), int(totals.open_jobs)

    async def overdue_candidates(self, now: datetime, limit: int) -> list[Job]:
        rows = (
            await self.session.execute(
                select(jobs)
                .where(
                    jobs.c.state.in_(_OPEN),
                    jobs.c.due_at < now,
                    or_(jobs.c.overdue_notified_for.is_(None), jobs.c.overdue_notified_for != jobs.c.due_at),
                )
                .order_by(jobs.c.due_at)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ).all()
        assignees = await self._assignees([r.id for r in rows])
        return [_job(r, assignees.get(r.id, []), []) for r in rows]
