"""The read model on PostgreSQL, written in the consumer's transaction.

Records are read once per transaction (a batch of events) and locked (`FOR UPDATE`); a record not
stored yet is first inserted as an empty row, so that two consumers seeing a job's first events
at once wait for each other instead of both starting from nothing. What the handlers change is
kept in memory and written at commit, one statement per table: the batch's records, its counter
changes summed per day and month (keys in order, so concurrent transactions lock rows in one
order), the open deadlines, the newest reconciliations and the events counted per region.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import date, datetime
from typing import Any, Protocol

import asyncpg
import orjson
from toex_kernel.regions import Region

from toex_oversight.domain.model import (
    ClockRecord,
    Deadline,
    JobRecord,
    Key,
    Reconciliation,
    ReferralRecord,
)
from toex_oversight.domain.overview import Grain, month_of


class Connected(Protocol):
    """The unit of work's connection, inside its transaction."""

    async def connection(self) -> asyncpg.Connection: ...


# --- records ------------------------------------------------------------------------------------

_JOB_COLUMNS = (
    "job, region, force, job_type, state, state_revision, priority, priority_revision, due_at, "
    "due_revision, created_at, delivered_at, taken_by, rating, rated_at, force_revision, threat, "
    "threat_revision, commented"
)
_ENSURE_JOBS = (
    "INSERT INTO jobs (job, region) SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING"
)
_LOAD_JOBS = f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job = ANY($1::text[]) ORDER BY job FOR UPDATE"
# Every job changed in the batch in one statement (the regions that took a job travel as one
# comma-separated string each: an array of arrays must be rectangular).
_SAVE_JOBS = (
    "UPDATE jobs SET force = x.force, job_type = x.job_type, state = x.state, "
    "state_revision = x.state_revision, priority = x.priority, priority_revision = x.priority_revision, "
    "due_at = x.due_at, due_revision = x.due_revision, created_at = x.created_at, "
    "delivered_at = x.delivered_at, taken_by = string_to_array(x.taken_by, ','), rating = x.rating, "
    "rated_at = x.rated_at, force_revision = x.force_revision, threat = x.threat, "
    "threat_revision = x.threat_revision, commented = x.commented "
    "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], "
    "$6::text[], $7::bigint[], $8::timestamptz[], $9::bigint[], $10::timestamptz[], $11::timestamptz[], "
    "$12::text[], $13::smallint[], $14::timestamptz[], $15::bigint[], $16::text[], $17::bigint[], "
    "$18::boolean[]) AS x(job, force, job_type, state, state_revision, "
    "priority, priority_revision, due_at, due_revision, created_at, delivered_at, taken_by, rating, "
    "rated_at, force_revision, threat, threat_revision, commented) WHERE jobs.job = x.job"
)


def _job(row: asyncpg.Record) -> JobRecord:
    return JobRecord(
        job=row["job"],
        region=Region(row["region"]),
        force=row["force"],
        job_type=row["job_type"],
        state=row["state"],
        state_revision=row["state_revision"],
        priority=row["priority"],
        priority_revision=row["priority_revision"],
        due_at=row["due_at"],
        due_revision=row["due_revision"],
        created_at=row["created_at"],
        delivered_at=row["delivered_at"],
        taken_by=frozenset(row["taken_by"]),
        rating=row["rating"],
        rated_at=row["rated_at"],
        force_revision=row["force_revision"],
        threat=row["threat"],
        threat_revision=row["threat_revision"],
        commented=row["commented"],
    )


def _job_row(record: JobRecord) -> tuple[Any, ...]:
    """The job's columns after `job`, as `_SAVE_JOBS` takes them (taken_by comma-separated)."""
    return (
        record.job,
        record.force,
        record.job_type,
        record.state,
        record.state_revision,
        record.priority,
        record.priority_revision,
        record.due_at,
        record.due_revision,
        record.created_at,
        record.delivered_at,
        ",".join(sorted(record.taken_by)),
        record.rating,
        record.rated_at,
        record.force_revision,
        record.threat,
        record.threat_revision,
        record.commented,
    )


class _Records:
    """Records of one kind read (and locked) in the transaction, and those changed in it."""

    ensure: str
    load_sql: str
    save_sql: str

    def __init__(self, uow: Connected) -> None:
        self._uow = uow
        self._read: dict[str, Any] = {}
        self._changed: dict[str, Any] = {}

    def _from_row(self, row: asyncpg.Record) -> Any:
        raise NotImplementedError

    def _to_row(self, record: Any) -> tuple[Any, ...]:
        raise NotImplementedError

    async def load(self, keys: Iterable[tuple[str, Region]]) -> None:
        """Read and lock these records (empty rows for those not stored yet), once each."""
        wanted = {name: region for name, region in keys if name not in self._read}
        if not wanted:
            return
        names = sorted(wanted)
        conn = await self._uow.connection()
        await conn.execute(self.ensure, names, [wanted[n].value for n in names])
        for row in await conn.fetch(self.load_sql, names):
            self._read[row[0]] = self._from_row(row)

    async def _get(self, name: str, region: Region) -> Any:
        if name in self._changed:
            return self._changed[name]
        if name not in self._read:
            await self.load([(name, region)])
        return self._read.get(name)

    def put(self, record: Any) -> None:
        self._changed[self._name(record)] = record

    def _name(self, record: Any) -> str:
        raise NotImplementedError

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write the changed records, in key order, in one statement (columns as arrays)."""
        changed = [self._to_row(self._changed[name]) for name in sorted(self._changed)]
        self._changed.clear()
        if changed:
            await conn.execute(self.save_sql, *(list(column) for column in zip(*changed, strict=True)))


class PgJobRecords(_Records):
    ensure, load_sql, save_sql = _ENSURE_JOBS, _LOAD_JOBS, _SAVE_JOBS

    def _from_row(self, row: asyncpg.Record) -> JobRecord:
        return _job(row)

    def _to_row(self, record: JobRecord) -> tuple[Any, ...]:
        return _job_row(record)

    def _name(self, record: JobRecord) -> str:
        return record.job

    async def get(self, job: str, region: Region) -> JobRecord | None:
        """The job as stored (the empty record of a job seen for the first time)."""
        return await self._get(job, region)  # type: ignore[no-any-return]


_ENSURE_REFERRALS = (
    "INSERT INTO referrals (referral, region) SELECT * FROM unnest($1::text[], $2::text[]) "
    "ON CONFLICT DO NOTHING"
)
_LOAD_REFERRALS = (
    "SELECT referral, region, drafted_at, state, state_at, state_event, clocks FROM referrals "
    "WHERE referral = ANY($1::text[]) ORDER BY referral FOR UPDATE"
)
_SAVE_REFERRALS = (
    "UPDATE referrals SET drafted_at = x.drafted_at, state = x.state, state_at = x.state_at, "
    "state_event = x.state_event, clocks = x.clocks::jsonb FROM unnest($1::text[], $2::timestamptz[], "
    "$3::text[], $4::timestamptz[], $5::text[], $6::text[]) AS x(referral, drafted_at, state, state_at, "
    "state_event, clocks) WHERE referrals.referral = x.referral"
)


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _clocks_json(clocks: Iterable[ClockRecord]) -> str:
    return orjson.dumps(
        [
            {
                "destination": c.destination,
                "due_at": c.due_at.isoformat() if c.due_at else None,
                "met_at": c.met_at.isoformat() if c.met_at else None,
            }
            for c in clocks
        ]
    ).decode()


class PgReferralRecords(_Records):
    ensure, load_sql, save_sql = _ENSURE_REFERRALS, _LOAD_REFERRALS, _SAVE_REFERRALS

    def _from_row(self, row: asyncpg.Record) -> ReferralRecord:
        return ReferralRecord(
            referral=row["referral"],
            region=Region(row["region"]),
            drafted_at=row["drafted_at"],
            state=row["state"],
            state_at=row["state_at"],
            state_event=row["state_event"],
            clocks=tuple(
                ClockRecord(c["destination"], _time(c["due_at"]), _time(c["met_at"])) for c in row["clocks"]
            ),
        )

    def _to_row(self, record: ReferralRecord) -> tuple[Any, ...]:
        return (
            record.referral,
            record.drafted_at,
            record.state,
            record.state_at,
            record.state_event,
            _clocks_json(record.clocks),
        )

    def _name(self, record: ReferralRecord) -> str:
        return record.referral

    async def get(self, referral: str, region: Region) -> ReferralRecord | None:
        return await self._get(referral, region)  # type: ignore[no-any-return]


# --- counters, deadlines, reconciliations, activity ------------------------------------------------

_ADD_COUNTS = (
    "INSERT INTO counts (grain, bucket, region, force, figure, value, n) "
    "SELECT * FROM unnest($1::text[], $2::date[], $3::text[], $4::text[], $5::text[], $6::text[], "
    "$7::bigint[]) ON CONFLICT (grain, bucket, region, force, figure, value) "
    "DO UPDATE SET n = counts.n + EXCLUDED.n"
)

_CountKey = tuple[str, date, str, str, str, str]


class PgCounters:
    def __init__(self) -> None:
        self._delta: dict[_CountKey, int] = defaultdict(int)

    def add(self, delta: Mapping[Key, int]) -> None:
        for key, count in delta.items():
            for grain, bucket in ((Grain.DAY.value, key.day), (Grain.MONTH.value, month_of(key.day))):
                self._delta[(grain, bucket, key.region, key.force, key.figure, key.value)] += count

    async def flush(self, conn: asyncpg.Connection) -> None:
        rows = sorted((key, n) for key, n in self._delta.items() if n)
        self._delta.clear()
        if rows:
            columns = list(zip(*(key for key, _ in rows), strict=True))
            await conn.execute(_ADD_COUNTS, *columns, [n for _, n in rows])


_DROP_DEADLINES = (
    "DELETE FROM deadlines WHERE (kind, item, part) IN "
    "(SELECT * FROM unnest($1::text[], $2::text[], $3::text[]))"
)
_PUT_DEADLINES = (
    "INSERT INTO deadlines (kind, item, part, region, force, cohort, due_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::date[], "
    "$7::timestamptz[]) ON CONFLICT (kind, item, part) DO UPDATE SET region = EXCLUDED.region, "
    "force = EXCLUDED.force, cohort = EXCLUDED.cohort, due_at = EXCLUDED.due_at"
)


class PgDeadlines:
    def __init__(self) -> None:
        self._now: dict[tuple[str, str, str], Deadline | None] = {}

    def replace(self, old: Iterable[Deadline], new: Iterable[Deadline]) -> None:
        for deadline in old:
            self._now[deadline.key] = None
        for deadline in new:
            self._now[deadline.key] = deadline

    async def flush(self, conn: asyncpg.Connection) -> None:
        changes, self._now = sorted(self._now.items()), {}
        gone = [key for key, deadline in changes if deadline is None]
        kept = [d for _, d in changes if d is not None]
        if gone:
            await conn.execute(_DROP_DEADLINES, *(list(c) for c in zip(*gone, strict=True)))
        if kept:
            await conn.execute(
                _PUT_DEADLINES,
                [d.kind.value for d in kept],
                [d.item for d in kept],
                [d.part for d in kept],
                [d.region for d in kept],
                [d.force for d in kept],
                [d.cohort for d in kept],
                [d.due_at for d in kept],
            )


_OFFER_RECONCILIATION = (
    "INSERT INTO reconciliations (region, completed_at, reconciliation, local_records, in_sync, held, "
    "stale, missing, rejected, conflict) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) "
    "ON CONFLICT (region) DO UPDATE SET completed_at = EXCLUDED.completed_at, "
    "reconciliation = EXCLUDED.reconciliation, local_records = EXCLUDED.local_records, "
    "in_sync = EXCLUDED.in_sync, held = EXCLUDED.held, stale = EXCLUDED.stale, "
    "missing = EXCLUDED.missing, rejected = EXCLUDED.rejected, conflict = EXCLUDED.conflict "
    "WHERE (reconciliations.completed_at, reconciliations.reconciliation) "
    "< (EXCLUDED.completed_at, EXCLUDED.reconciliation)"
)


class PgReconciliations:
    def __init__(self) -> None:
        self._newest: dict[Region, Reconciliation] = {}

    def offer(self, reconciliation: Reconciliation) -> None:
        if reconciliation.newer_than(self._newest.get(reconciliation.region)):
            self._newest[reconciliation.region] = reconciliation

    async def flush(self, conn: asyncpg.Connection) -> None:
        offered, self._newest = sorted(self._newest.items()), {}
        if offered:
            await conn.executemany(
                _OFFER_RECONCILIATION,
                [
                    (
                        r.region.value,
                        r.completed_at,
                        r.name,
                        r.local_records,
                        r.in_sync,
                        r.held,
                        r.stale,
                        r.missing,
                        r.rejected,
                        r.conflict,
                    )
                    for _, r in offered
                ],
            )


_SAW = (
    "INSERT INTO activity (region, domain, events, latest_event_at) "
    "SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[]) "
    "ON CONFLICT (region, domain) DO UPDATE SET events = activity.events + EXCLUDED.events, "
    "latest_event_at = GREATEST(activity.latest_event_at, EXCLUDED.latest_event_at)"
)


class PgActivity:
    """Events counted per region and producing domain: each consumer (one per domain) writes rows
    of its own, so consumers committing at once do not wait for each other."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[int, datetime]] = {}

    def saw(self, region: Region, domain: str, occurred_at: datetime) -> None:
        count, latest = self._seen.get((region.value, domain), (0, occurred_at))
        self._seen[(region.value, domain)] = (count + 1, max(latest, occurred_at))

    async def flush(self, conn: asyncpg.Connection) -> None:
        seen, self._seen = sorted(self._seen.items()), {}
        if seen:
            await conn.execute(
                _SAW,
                [r for (r, _), _ in seen],
                [d for (_, d), _ in seen],
                [c for _, (c, _) in seen],
                [t for _, (_, t) in seen],
            )
