"""Job grants as a read model of tasking's events, kept by every service whose material a job's
assignees work (the rules are toex_kernel.grants').

Each service that takes part keeps one row per job it has heard of in `job_grants`: the job's
region, whether it is open, who holds it, and the revision of the job that said so. Tasking's
v2 events about who may work a job (JobCreated, JobAssigned, JobReassigned, JobStatusChanged,
JobUpdated)
each carry the whole answer (`JobAccess`: state, assignees, collaborating regions) with the job's revision, so the model keeps the
highest revision it has seen: an event redelivered, or one overtaken by a later one, changes
nothing. `subscribe(bus, service)` puts the consumer on the service's bus (a fetched batch's
access is stored in one pipelined statement by its prefetch, `keep_batch`); `create_grant_schema`
goes in one of the service's migrations; `SqlGrants` answers the service's policy in the
transaction of the call it is deciding; `with_grant` reads a grant in the statement that reads
the material it decides (no round trip of its own).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import (
    BigInteger,
    BindParameter,
    Boolean,
    Column,
    DateTime,
    FromClause,
    MetaData,
    Select,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_kernel.grants import JobGrant, is_job_of, job_of_purpose
from toex_kernel.regions import Region

from toex_common.events.bus import MessageBus
from toex_common.events.consumer import PermanentError, region_of
from toex_common.events.envelope import IncomingEvent

grants_metadata = MetaData()

job_grants_table = Table(
    "job_grants",
    grants_metadata,
    Column("job", Text, primary_key=True),
    Column("region", String(16), nullable=False),
    Column("open", Boolean, nullable=False),
    Column("holders", ARRAY(Text), nullable=False),
    # Regions collaborating on the job: their supervisors read its material.
    Column("collaborators", ARRAY(Text), nullable=False, server_default="{}"),
    Column("revision", BigInteger, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

# A grant is live while the job is being worked; closing, cancelling or declining ends it.
OPEN_STATES = frozenset(
    {
        tasking_events.JOB_STATE_RAISED,
        tasking_events.JOB_STATE_ASSIGNED,
        tasking_events.JOB_STATE_IN_PROGRESS,
        tasking_events.JOB_STATE_DELIVERED,
    }
)
ACCESS_EVENTS = (
    tasking_events.JobCreated,
    tasking_events.JobAssigned,
    tasking_events.JobReassigned,
    tasking_events.JobStatusChanged,
    tasking_events.JobUpdated,
)


def create_grant_schema(op: Any) -> None:
    """Call from the migration that brings job grants to a service."""
    grants_metadata.create_all(op.get_bind())


def upgrade_grant_schema(op: Any) -> None:
    """Bring a job_grants table made by an earlier `create_grant_schema` up to date (call from a
    later migration; does nothing to a table made with the current model)."""
    op.execute("ALTER TABLE job_grants ADD COLUMN IF NOT EXISTS collaborators text[] NOT NULL DEFAULT '{}'")


def drop_grant_schema(op: Any) -> None:
    grants_metadata.drop_all(op.get_bind())


# Written on the session's own asyncpg connection as a prepared statement, like `SqlGrants.of_job`
# reads: every service keeps grants from most of tasking's events, and building and compiling
# SQLAlchemy's upsert per event cost several times the CPU (bench/results/grants-keep.md).
_STORE_ACCESS = (
    "INSERT INTO job_grants (job, region, open, holders, collaborators, revision) "
    "VALUES ($1, $2, $3, $4::text[], $5::text[], $6) "
    "ON CONFLICT (job) DO UPDATE SET open = excluded.open, holders = excluded.holders, "
    "collaborators = excluded.collaborators, revision = excluded.revision, updated_at = now() "
    "WHERE job_grants.revision <= excluded.revision"
)


def _access_row(job: str, region: Region, access: tasking_events.JobAccess) -> tuple[Any, ...]:
    holders = sorted({a.username for a in access.assignees if a.username})
    collaborators = sorted(
        {Region.from_proto(r).value for r in access.collaborating_regions if r} - {region.value}
    )
    return (job, region.value, access.state in OPEN_STATES, holders, collaborators, access.revision)


async def _driver(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's: the statement runs in its transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    return raw.driver_connection


async def store_access(
    session: AsyncSession, job: str, region: Region, access: tasking_events.JobAccess
) -> None:
    """Keep `access` unless the model already holds a later revision of the job."""
    await (await _driver(session)).execute(_STORE_ACCESS, *_access_row(job, region, access))


async def store_accesses(
    session: AsyncSession, accesses: Sequence[tuple[str, Region, tasking_events.JobAccess]]
) -> None:
    """`store_access` for many jobs at once: one pipelined statement (asyncpg's executemany, no
    round trip per job). A job named twice keeps its later revision, whatever the order: the
    statement's revision rule decides, as it does between batches."""
    if accesses:
        rows = [_access_row(job, region, access) for job, region, access in accesses]
        await (await _driver(session)).executemany(_STORE_ACCESS, rows)


_GRANT_OF_JOB = "SELECT region, holders, open, collaborators FROM job_grants WHERE job = $1"


def _grant(job: str, region: str, holders: list[str], open: bool, collaborators: list[str]) -> JobGrant:
    return JobGrant(
        job, Region(region), frozenset(holders), bool(open), frozenset(Region(r) for r in collaborators)
    )


_GRANT_COLUMNS = (
    job_grants_table.c.region.label("grant_region"),
    job_grants_table.c.holders.label("grant_holders"),
    job_grants_table.c.open.label("grant_open"),
    job_grants_table.c.collaborators.label("grant_collaborators"),
)


def with_grant(query: Select[Any], material: FromClause, job: str | BindParameter[Any]) -> Select[Any]:
    """`query`, a select from `material`, with the grant of `job` beside each of its rows, read in
    the same statement and so in the same transaction: a LEFT JOIN on job_grants' key. A call
    that reaches material only under a grant then pays no round trip of its own for the grant.
    `grant_of_row` reads it back; nothing of it is kept between calls.

    Build the statement once, with `job` a `bindparam`: built per call, the join and its cache
    key cost SQLAlchemy 50 to 80 us of CPU (a small VM), much of what the join saves."""
    grants = job_grants_table
    return query.select_from(material.outerjoin(grants, grants.c.job == job)).add_columns(*_GRANT_COLUMNS)


def grant_of_row(row: Any, job: str) -> JobGrant | None:
    """The grant of `job` in a row of a `with_grant` query; None when the job has none."""
    if row.grant_region is None:
        return None
    return _grant(job, row.grant_region, row.grant_holders, row.grant_open, row.grant_collaborators)


class SqlGrants:
    """The service's grants, read in the transaction of the call being decided."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def of_job(self, job: str) -> JobGrant | None:
        # On the session's own asyncpg connection, in its transaction, as a prepared statement:
        # a read under a grant pays one indexed lookup, not SQLAlchemy's compile and result
        # wrapping (about 25 us against 200 us a call).
        connection = await self._session.connection()
        raw = await connection.get_raw_connection()
        row = await raw.driver_connection.fetchrow(_GRANT_OF_JOB, job)  # type: ignore[union-attr]
        if row is None:
            return None
        return _grant(job, row["region"], row["holders"], row["open"], row["collaborators"])

    async def for_purpose(self, purpose: str) -> JobGrant | None:
        """The grant of the job the call's purpose names, if it names one."""
        job = job_of_purpose(purpose)
        return await self.of_job(job) if job else None


# The events of a fetched batch whose access `keep_batch` has stored, by the batch's unit of
# work: their handler has nothing left to do. (Weak keys: gone with the unit of work.)
_KEPT: WeakKeyDictionary[Any, set[str]] = WeakKeyDictionary()


def _job_and_region(event: IncomingEvent) -> tuple[str, Region]:
    job = event.message.job  # type: ignore[union-attr]
    region = region_of(event)
    if not is_job_of(job, region):
        # The subject's region is what NATS vouches for: a job of another region named on it
        # would let one region grant access to another's material.
        raise PermanentError(f"job {job!r} is not of the region {region.value} the event came from")
    return job, region


async def keep_batch(events: Sequence[IncomingEvent], uow: Any) -> None:
    """The consumer's prefetch: a fetched batch's access in one statement, in the batch's
    transaction. An event it cannot take (no region, a job of another region) is left to its
    handler, which refuses it; the batch is then rolled back and taken one event at a time."""
    accesses: list[tuple[str, Region, tasking_events.JobAccess]] = []
    ids: list[str] = []
    for event in events:
        try:
            job, region = _job_and_region(event)
        except PermanentError:
            continue
        accesses.append((job, region, event.message.access))  # type: ignore[union-attr]
        ids.append(event.event_id)
    await store_accesses(uow.session, accesses)
    _KEPT.setdefault(uow, set()).update(ids)


async def on_access_changed(event: IncomingEvent, uow: Any) -> None:
    kept = _KEPT.get(uow)
    if kept is not None and event.event_id in kept:
        return
    job, region = _job_and_region(event)
    await store_access(uow.session, job, region, event.message.access)  # type: ignore[union-attr]


def subscribe(bus: MessageBus, service: str) -> None:
    """Keep the service's grants from tasking's events, under `<service>-job-grants`."""
    for event_type in ACCESS_EVENTS:
        bus.on(f"{service}-job-grants", event_type, on_access_changed, prefetch=keep_batch)
