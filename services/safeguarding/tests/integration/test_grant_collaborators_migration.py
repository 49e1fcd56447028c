"""Migration 0005: a job_grants table made before the shared model had `collaborators` gets the
column (no collaborators for the jobs it holds), and the grants read and write as the service
does; on a table that has it, the migration changes nothing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine
from toex.tasking.events.v2 import events_pb2 as tasking_events
from toex_common.grants import SqlGrants, store_access
from toex_common.migrations import upgrade
from toex_kernel.regions import Region
from toex_safeguarding.__main__ import migrations_dir

pytestmark = pytest.mark.integration

JOB = "regions/EMSOU/jobs/j-before"


async def test_a_grants_table_made_before_collaborators_gets_them(database: str) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir(), "0004")
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # As 0003 made the table before the shared model had the column.
        await conn.execute("ALTER TABLE job_grants DROP COLUMN collaborators")
        await conn.execute(
            "INSERT INTO job_grants (job, region, open, holders, revision) "
            "VALUES ($1, 'EMSOU', true, '{researcher.london}', 2)",
            JOB,
        )
        await asyncio.to_thread(upgrade, database, migrations_dir())
        await asyncio.to_thread(upgrade, database, migrations_dir())  # at head: nothing to do
        column = await conn.fetchval(
            "SELECT count(*) FROM information_schema.columns "
            "WHERE table_name = 'job_grants' AND column_name = 'collaborators'"
        )
    finally:
        await conn.close()
    assert column == 1

    engine = create_async_engine(database)
    try:
        async with AsyncSession(engine) as session, session.begin():
            before = await SqlGrants(session).of_job(JOB)
            await store_access(
                session,
                JOB,
                Region.EMSOU,
                tasking_events.JobAccess(
                    revision=3,
                    state=tasking_events.JOB_STATE_ASSIGNED,
                    assignees=[tasking_events.Assignee(username="researcher.london")],
                    collaborating_regions=[Region.ERSOU.to_proto()],  # type: ignore[list-item]
                ),
            )
            after = await SqlGrants(session).of_job(JOB)
    finally:
        await engine.dispose()
    assert (
        before is not None and before.collaborators == frozenset() and before.holders == {"researcher.london"}
    )
    assert after is not None and after.collaborators == frozenset({Region.ERSOU})
