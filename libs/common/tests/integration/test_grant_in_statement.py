"""A grant read in the statement that reads the material (`with_grant`) against a real
PostgreSQL: it answers what `SqlGrants.of_job` answers (open, collaborating regions, closed,
unknown, another job's), and a change to the grant is seen by the next statement, even in the
same transaction: nothing of it is kept between reads."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import Column, MetaData, Table, Text, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.tasking.events.v2 import events_pb2 as ev
from toex_common.db import session_factory
from toex_common.grants import grant_of_row, grants_metadata, store_access, with_grant
from toex_common.uow import SqlAlchemyUnitOfWork
from toex_kernel.grants import JobGrant
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

material_metadata = MetaData()
material = Table(
    "grant_test_material",
    material_metadata,
    Column("id", Text, primary_key=True),
    Column("job", Text, nullable=False),
)
BY_ID = with_grant(select(material).where(material.c.id == bindparam("id")), material, bindparam("job"))


def access(revision: int, state: int, *holders: str, collaborating: tuple[Region, ...] = ()) -> ev.JobAccess:
    return ev.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[ev.Assignee(username=h) for h in holders],
        collaborating_regions=[r.to_proto() for r in collaborating],  # type: ignore[misc]
    )


async def test_a_grant_read_with_its_material_is_the_grant_as_it_is_now(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(grants_metadata.create_all)
        await conn.run_sync(material_metadata.create_all)
    sessions = session_factory(engine)
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    other = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    unknown = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    item = uuid.uuid4().hex

    async def read(
        uow: SqlAlchemyUnitOfWork, name: str, grant_job: str
    ) -> tuple[str, JobGrant | None] | None:
        row = (await uow.session.execute(BY_ID, {"id": name, "job": grant_job})).first()
        return None if row is None else (row.job, grant_of_row(row, grant_job))

    async with SqlAlchemyUnitOfWork(sessions) as uow:
        await uow.session.execute(insert(material).values(id=item, job=job))
        await store_access(
            uow.session,
            job,
            Region.EMSOU,
            access(2, ev.JOB_STATE_ASSIGNED, "researcher.london", collaborating=(Region.ERSOU,)),
        )
        await store_access(
            uow.session, other, Region.EMSOU, access(1, ev.JOB_STATE_ASSIGNED, "researcher.se")
        )
        await uow.commit()

    async with SqlAlchemyUnitOfWork(sessions) as uow:
        expected = JobGrant(
            job, Region.EMSOU, frozenset({"researcher.london"}), True, frozenset({Region.ERSOU})
        )
        assert await read(uow, item, job) == (job, expected)
        assert await uow.grants.of_job(job) == expected
        # The grant asked about, whatever the material is attached to: the policy compares them.
        assert await read(uow, item, other) == (
            job,
            JobGrant(other, Region.EMSOU, frozenset({"researcher.se"}), True),
        )
        assert await read(uow, item, unknown) == (job, None)
        # No material, no row: nothing is said about the grant.
        assert await read(uow, "missing", job) is None

        # Closed in this transaction: the next statement in it sees the grant closed.
        await store_access(
            uow.session, job, Region.EMSOU, access(3, ev.JOB_STATE_CLOSED, "researcher.london")
        )
        found = await read(uow, item, job)
        assert found is not None and found[1] is not None and not found[1].open
        await uow.commit()

    async with SqlAlchemyUnitOfWork(sessions) as uow:
        found = await read(uow, item, job)
        assert found is not None and found[1] == await uow.grants.of_job(job)
        assert found[1] is not None and not found[1].open
