"""The job repository on PostgreSQL.

Every tasking call runs through here, so the statements are plain SQL run as prepared
statements on the asyncpg connection of the unit of work (toex_common.uow.DriverUnitOfWork):
no statement compilation or result wrapping per call, and a new job with its events is stored
in one round trip. The tables themselves are defined once,
in SQLAlchemy, in tables.py (Alembic migrations are generated from them).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
from toex_common.uow import DriverUnitOfWork
from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.regions import Region

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
from toex_tasking.domain.referrals import ChangeKind, ReferralChange
from toex_tasking.service_layer.ports import JobQuery, ResearcherCount

_OPEN = [s.value for s in OPEN_STATES]
_WORKING = [s.value for s in WORKING_STATES]

_COLUMNS = (
    "id",
    "region",
    "requesting_unit",
    "requesting_officer",
    "operation_name",
    "job_type",
    "priority",
    "due_at",
    "description",
    "handling",
    "state",
    "subject_entity_ids",
    "product",
    "feedback_rating",
    "feedback_comment",
    "feedback_by",
    "feedback_at",
    "created_by",
    "created_at",
    "updated_at",
    "overdue_notified_for",
    "revision",
    "collaborating_regions",
    "requesting_force",
    "threat_category",
    "feedback_officer_name",
    "feedback_token_hash",
    "feedback_token_expires_at",
)
_SELECT_JOBS = f"SELECT {', '.join(f'jobs.{c}' for c in _COLUMNS)} FROM jobs"
_INSERT_JOB = f"INSERT INTO jobs ({', '.join(_COLUMNS)}) VALUES ({', '.join(f'${i + 1}' for i in range(len(_COLUMNS)))})"
_UPDATE_JOB = (
    f"UPDATE jobs SET {', '.join(f'{c} = ${i}' for i, c in enumerate(_COLUMNS) if i)} "
    f"WHERE id = ${len(_COLUMNS)}"
)
_CHANGE_COLUMNS = (
    "event_id",
    "job_id",
    "referral",
    "kind",
    "state",
    "occurred_at",
    "region",
    "handling",
    "summary",
    "actor",
    "concerns",
    "risk_level",
)
# The changes of every referral that ever named the job, on whichever job they name (a
# referral linked to another job since shows there only: domain/referrals.py).
_REFERRALS_OF_JOB = "SELECT r.referral FROM referral_changes r WHERE r.job_id = jobs.id"
# The job with its assignees, notes and linked referrals' changes aggregated as JSON: one round trip.
_GET_JOB = f"""
SELECT {", ".join(f"jobs.{c}" for c in _COLUMNS)},
    (SELECT json_agg(json_build_object('username', a.username, 'region', a.region,
                                       'assigned_at', a.assigned_at) ORDER BY a.position)
     FROM job_assignees a WHERE a.job_id = jobs.id) AS assignees_json,
    (SELECT json_agg(json_build_object('id', n.id, 'author', n.author, 'text', n.text,
                                       'created_at', n.created_at) ORDER BY n.created_at, n.id)
     FROM job_notes n WHERE n.job_id = jobs.id) AS notes_json,
    (SELECT json_agg(json_build_object({", ".join(f"'{c}', c.{c}" for c in _CHANGE_COLUMNS)})
                     ORDER BY c.occurred_at, c.event_id)
     FROM referral_changes c WHERE c.referral IN ({_REFERRALS_OF_JOB})) AS referral_changes_json
FROM jobs WHERE jobs.id = $1"""
_GET_JOB_FOR_UPDATE = _GET_JOB + " FOR UPDATE OF jobs"
_GET_JOBS = _GET_JOB.replace("jobs.id = $1", "jobs.id = ANY($1::text[])")
_DELETE_ASSIGNEES = "DELETE FROM job_assignees WHERE job_id = $1"
_INSERT_ASSIGNEE = (
    "INSERT INTO job_assignees (job_id, username, region, position, assigned_at) VALUES ($1, $2, $3, $4, $5)"
)
_INSERT_NOTE = "INSERT INTO job_notes (job_id, id, author, text, created_at) VALUES ($1, $2, $3, $4, $5)"
_ASSIGNEES_OF = (
    "SELECT job_id, username, region, assigned_at FROM job_assignees "
    "WHERE job_id = ANY($1::text[]) ORDER BY job_id, position"
)
# For a page of jobs: (the job, a change) for every change of each referral that ever named it.
_REFERRAL_CHANGES_OF = f"""
SELECT named.job_id AS for_job, {", ".join(f"c.{c}" for c in _CHANGE_COLUMNS)}
FROM (SELECT DISTINCT job_id, referral FROM referral_changes WHERE job_id = ANY($1::text[])) named
JOIN referral_changes c ON c.referral = named.referral"""
_INSERT_CHANGE = (
    f"INSERT INTO referral_changes ({', '.join(_CHANGE_COLUMNS)}) "
    f"VALUES ({', '.join(f'${i + 1}' for i in range(len(_CHANGE_COLUMNS)))}) ON CONFLICT DO NOTHING"
)
_LOAD_BY_RESEARCHER = """
SELECT a.username, min(a.region) AS region, count(*) AS open_jobs,
       count(*) FILTER (WHERE j.due_at < $2) AS overdue_jobs
FROM job_assignees a JOIN jobs j ON j.id = a.job_id
WHERE j.state = ANY($3::text[]) AND (a.region = $1 OR j.region = $1)
GROUP BY a.username"""
_REGION_TOTALS = """
SELECT count(*) AS open_jobs, count(*) FILTER (WHERE state = $2) AS unassigned
FROM jobs WHERE region = $1 AND state = ANY($3::text[])"""
_OVERDUE = f"""{_SELECT_JOBS}
WHERE state = ANY($2::text[]) AND due_at < $1
  AND (overdue_notified_for IS NULL OR overdue_notified_for <> due_at)
ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED"""


def _values(job: Job) -> tuple[Any, ...]:
    feedback = job.feedback
    return (
        job.id,
        job.region.value,
        job.requesting_unit,
        job.requesting_officer,
        job.operation_name,
        job.job_type.value,
        job.priority.value,
        job.due_at,
        job.description,
        job.handling.value,
        job.state.value,
        job.subject_entity_ids,
        job.product,
        feedback.rating if feedback else None,
        feedback.comment if feedback else None,
        feedback.recorded_by if feedback else None,
        feedback.recorded_at if feedback else None,
        job.created_by,
        job.created_at,
        job.updated_at,
        job.overdue_notified_for,
        job.revision,
        [r.value for r in job.collaborating_regions],
        job.requesting_force.value if job.requesting_force else None,
        job.threat_category.value if job.threat_category else None,
        feedback.officer_name if feedback else None,
        job.feedback_token_hash,
        job.feedback_token_expires_at,
    )


def _change(row: Mapping[str, Any]) -> ReferralChange:
    """A referral_changes row, or its JSON object (times as ISO text)."""
    occurred_at = row["occurred_at"]
    return ReferralChange(
        event_id=row["event_id"],
        job_id=row["job_id"],
        referral=row["referral"],
        kind=ChangeKind(row["kind"]),
        state=row["state"],
        occurred_at=datetime.fromisoformat(occurred_at) if isinstance(occurred_at, str) else occurred_at,
        region=Region(row["region"]),
        handling=Handling(row["handling"]),
        summary=row["summary"],
        actor=row["actor"],
        concerns=tuple(row["concerns"] or ()),
        risk_level=row["risk_level"],
    )


def _change_values(change: ReferralChange) -> tuple[Any, ...]:
    return (
        change.event_id,
        change.job_id,
        change.referral,
        change.kind.value,
        change.state,
        change.occurred_at,
        change.region.value,
        change.handling.value,
        change.summary,
        change.actor,
        list(change.concerns),
        change.risk_level,
    )


def _job(row: Mapping[str, Any], assignees: list[Assignee], notes: list[Note]) -> Job:
    feedback = None
    if row["feedback_rating"] is not None:
        feedback = Feedback(
            row["feedback_rating"],
            row["feedback_comment"] or "",
            row["feedback_by"] or "",
            row["feedback_at"],
            row["feedback_officer_name"] or "",
        )
    return Job(
        id=row["id"],
        region=Region(row["region"]),
        requesting_unit=row["requesting_unit"],
        requesting_officer=row["requesting_officer"],
        operation_name=row["operation_name"],
        job_type=JobType(row["job_type"]),
        priority=Priority(row["priority"]),
        due_at=row["due_at"],
        description=row["description"],
        handling=Handling(row["handling"]),
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        state=JobState(row["state"]),
        assignees=assignees,
        subject_entity_ids=list(row["subject_entity_ids"] or []),
        notes=notes,
        product=row["product"],
        feedback=feedback,
        requesting_force=Force(row["requesting_force"]) if row["requesting_force"] else None,
        threat_category=ThreatCategory(row["threat_category"]) if row["threat_category"] else None,
        feedback_token_hash=row["feedback_token_hash"],
        feedback_token_expires_at=row["feedback_token_expires_at"],
        overdue_notified_for=row["overdue_notified_for"],
        revision=row["revision"],
        collaborating_regions=[Region(r) for r in row["collaborating_regions"] or []],
    )


def _job_with_children(row: Mapping[str, Any]) -> Job:
    """A row of _GET_JOB(S): the job with its assignees and notes aggregated as JSON."""
    assignees = [
        Assignee(a["username"], Region(a["region"]), datetime.fromisoformat(a["assigned_at"]))
        for a in row["assignees_json"] or []
    ]
    notes = [
        Note(n["id"], n["author"], n["text"], datetime.fromisoformat(n["created_at"]))
        for n in row["notes_json"] or []
    ]
    job = _job(row, assignees, notes)
    job.referral_changes = [_change(c) for c in row["referral_changes_json"] or []]
    return job


class PgReferralChangeRepository:
    """Writes are queued on the unit of work and sent at its commit."""

    def __init__(self, uow: DriverUnitOfWork) -> None:
        self.uow = uow

    async def add(self, change: ReferralChange) -> None:
        self.uow.write(_INSERT_CHANGE, *_change_values(change))


class PgJobRepository:
    """Writes are queued on the unit of work and sent at its commit; reads run on its connection."""

    def __init__(self, uow: DriverUnitOfWork) -> None:
        self.uow = uow

    async def add(self, job: Job) -> None:
        self.uow.track(job)
        job.revision += 1
        self.uow.write(_INSERT_JOB, *_values(job))
        self._write_children(job)

    async def save(self, job: Job) -> None:
        self.uow.track(job)
        job.revision += 1
        values = _values(job)
        self.uow.write(_UPDATE_JOB, *values[1:], values[0])
        self.uow.write(_DELETE_ASSIGNEES, job.id)
        self._write_children(job)

    def _write_children(self, job: Job) -> None:
        self.uow.write_many(
            _INSERT_ASSIGNEE,
            [(job.id, a.username, a.region.value, i, a.assigned_at) for i, a in enumerate(job.assignees)],
        )
        self.uow.write_many(
            _INSERT_NOTE, [(job.id, n.id, n.author, n.text, n.created_at) for n in job.new_notes]
        )
        job.new_notes.clear()

    async def get(self, job_id: str, *, for_update: bool = False) -> Job | None:
        conn = await self.uow.connection()
        row = await conn.fetchrow(_GET_JOB_FOR_UPDATE if for_update else _GET_JOB, job_id)
        return None if row is None else _job_with_children(row)

    async def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        conn = await self.uow.connection()
        return {row["id"]: _job_with_children(row) for row in await conn.fetch(_GET_JOBS, job_ids)}

    async def _assignees(self, conn: asyncpg.Connection, job_ids: list[str]) -> dict[str, list[Assignee]]:
        found: dict[str, list[Assignee]] = defaultdict(list)
        if job_ids:
            for r in await conn.fetch(_ASSIGNEES_OF, job_ids):
                found[r["job_id"]].append(Assignee(r["username"], Region(r["region"]), r["assigned_at"]))
        return found

    async def search(self, query: JobQuery, limit: int, after: tuple[datetime, str] | None) -> list[Job]:
        conditions: list[str] = []
        args: list[Any] = []

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        scope = []
        if query.regions is not None:
            scope.append(f"region = ANY({arg([r.value for r in query.regions])}::text[])")
        if query.or_assigned_to:
            scope.append(
                f"id IN (SELECT job_id FROM job_assignees WHERE username = {arg(query.or_assigned_to)})"
            )
        if query.or_collaborating is not None:
            # Containment, so the GIN index on the column serves it.
            scope.append(f"collaborating_regions @> ARRAY[{arg(query.or_collaborating.value)}]::text[]")
        if query.regions is not None or query.or_assigned_to or query.or_collaborating is not None:
            conditions.append(f"({' OR '.join(scope)})" if scope else "false")
        if query.owner is not None:
            conditions.append(f"region = {arg(query.owner.value)}")
        if query.states:
            conditions.append(f"state = ANY({arg([s.value for s in query.states])}::text[])")
        if query.assignee:
            conditions.append(
                f"id IN (SELECT job_id FROM job_assignees WHERE username = {arg(query.assignee)})"
            )
        if query.due_before is not None:
            conditions.append(f"due_at < {arg(query.due_before)}")
        if query.requesting_force is not None:
            conditions.append(f"requesting_force = {arg(query.requesting_force.value)}")
        if query.threat_category is not None:
            conditions.append(f"threat_category = {arg(query.threat_category.value)}")
        if after is not None:
            conditions.append(f"(created_at, id) < ({arg(after[0])}, {arg(after[1])})")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        conn = await self.uow.connection()
        rows = await conn.fetch(
            f"{_SELECT_JOBS}{where} ORDER BY created_at DESC, id DESC LIMIT {arg(limit)}", *args
        )
        ids = [r["id"] for r in rows]
        assignees = await self._assignees(conn, ids)
        changes = await self._referral_changes(conn, ids)
        jobs = [_job(r, assignees.get(r["id"], []), []) for r in rows]
        for job in jobs:
            job.referral_changes = changes.get(job.id, [])
        return jobs

    async def _referral_changes(
        self, conn: asyncpg.Connection, job_ids: list[str]
    ) -> dict[str, list[ReferralChange]]:
        found: dict[str, list[ReferralChange]] = defaultdict(list)
        if job_ids:
            for r in await conn.fetch(_REFERRAL_CHANGES_OF, job_ids):
                found[r["for_job"]].append(_change(r))
        return found

    async def open_load(self, region: Region, now: datetime) -> tuple[list[ResearcherCount], int, int]:
        conn = await self.uow.connection()
        rows = await conn.fetch(_LOAD_BY_RESEARCHER, region.value, now, _WORKING)
        counts = [
            ResearcherCount(r["username"], Region(r["region"]), r["open_jobs"], r["overdue_jobs"])
            for r in rows
        ]
        totals = await conn.fetchrow(_REGION_TOTALS, region.value, JobState.RAISED.value, _OPEN)
        assert totals is not None
        return counts, int(totals["unassigned"]), int(totals["open_jobs"])

    async def overdue_candidates(self, now: datetime, limit: int) -> list[Job]:
        conn = await self.uow.connection()
        rows = await conn.fetch(_OVERDUE, now, _OPEN, limit)
        assignees = await self._assignees(conn, [r["id"] for r in rows])
        return [_job(r, assignees.get(r["id"], []), []) for r in rows]
