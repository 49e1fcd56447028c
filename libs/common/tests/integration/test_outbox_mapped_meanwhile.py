"""Events mapped while the unit waits (`map_meanwhile`) reach the outbox whole and in order,
against real PostgreSQL: those mapped by commit go in first, the rest after."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import select, text
from toex.tasking.events.v1 import events_pb2
from toex_common.db import outbox_table, session_factory
from toex_common.events import build_event
from toex_common.uow import SqlAlchemyUnitOfWork
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration


@dataclass
class Noted:
    n: int


class NotingUow(SqlAlchemyUnitOfWork):
    def __init__(self, *args: Any, domain: str) -> None:
        super().__init__(*args)
        self.domain = domain
        self.copies = 0

    def integration_events(self, aggregate: Any, event: Any) -> list[Any]:
        job = f"regions/EMSOU/jobs/{event.n:05d}"
        return [
            build_event(
                events_pb2.FeedbackRecorded(job=job), domain=self.domain, source="t", region=Region.EMSOU
            )
        ]

    async def _copy_outbox(self) -> None:
        self.copies += 1
        await super()._copy_outbox()


async def test_a_commit_while_events_are_being_mapped_writes_every_event_once_in_order(engine) -> None:
    domain = f"t{uuid.uuid4().hex[:8]}"
    uow = NotingUow(session_factory(engine), domain=domain)
    async with uow:
        await uow.session.execute(text("SELECT 1"))
        for n in range(3000):
            uow.record(Noted(n))
        uow.map_meanwhile()
        await uow.session.execute(text("SELECT pg_sleep(0.005)"))  # a few hundred mapped meanwhile
        assert uow._mapping()  # still mapping when commit comes
        for n in range(3000, 3100):
            uow.record(Noted(n))
        await uow.commit()
    assert uow.copies == 2  # what was mapped went in first, the rest after
    async with engine.connect() as conn:
        rows = (
            await conn.execute(
                select(outbox_table.c.payload)
                .where(outbox_table.c.subject.like(f"%.{domain}.%"))
                .order_by(outbox_table.c.seq)
            )
        ).all()
    jobs = [events_pb2.FeedbackRecorded.FromString(r.payload).job for r in rows]
    assert jobs == [f"regions/EMSOU/jobs/{n:05d}" for n in range(3100)]
