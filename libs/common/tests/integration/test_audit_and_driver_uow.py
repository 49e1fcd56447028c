"""The audit chain with several writers, and the driver-level unit of work, on real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import func, select, text
from toex.tasking.events.v1 import events_pb2
from toex_common.audit import AuditEntry, PostgresAuditLog, verify
from toex_common.db import audit_table, create_engine, idempotency_table, outbox_table
from toex_common.events import build_event
from toex_common.uow import DriverUnitOfWork
from toex_kernel.errors import InvalidArgument
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration


async def test_writers_sharing_a_database_keep_one_unbroken_chain(engine: Any) -> None:
    # Three writers (as three replicas would have) append concurrently; each one's cached head
    # goes stale whenever another appends, which the key on seq must catch every time.
    writers = [PostgresAuditLog(engine) for _ in range(3)]

    async def calls(writer: PostgresAuditLog, who: str) -> None:
        await asyncio.gather(
            *(
                writer.record(
                    AuditEntry(action="/t.S/Get", outcome="OK", actor_username=who, resources=(f"r{i}",))
                )
                for i in range(200)
            )
        )

    await asyncio.gather(*(calls(w, f"user{i}") for i, w in enumerate(writers)))
    for writer in writers:
        await writer.stop()
    report = await verify(engine)
    assert report.intact, report.problems
    assert report.entries == 600
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_table.c.actor_username, func.count()).group_by(audit_table.c.actor_username)
        )
        per_user = {username: count for username, count in rows}
    assert per_user == {"user0": 200, "user1": 200, "user2": 200}


async def test_a_nul_in_a_resource_name_is_stored_and_fails_nobody_else(engine: Any) -> None:
    log = PostgresAuditLog(engine)
    await asyncio.gather(
        log.record(
            AuditEntry(action="/t.S/Get", outcome="NOT_FOUND", resources=("regions/EMSOU/jobs/\x00x",))
        ),
        log.record(AuditEntry(action="/t.S/Get", outcome="OK", resources=("regions/EMSOU/jobs/ok",))),
    )
    await log.stop()
    assert (await verify(engine)).intact
    async with engine.connect() as conn:
        stored = (
            (await conn.execute(select(audit_table.c.resources).order_by(audit_table.c.seq))).scalars().all()
        )
    assert stored == [["regions/EMSOU/jobs/\ufffdx"], ["regions/EMSOU/jobs/ok"]]


async def test_an_edited_entry_breaks_the_chain(engine: Any) -> None:
    log = PostgresAuditLog(engine)
    for i in range(3):
        await log.record(AuditEntry(action="/t.S/Get", outcome="OK", purpose=f"Op {i}"))
    await log.stop()
    async with engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await conn.execute(text("UPDATE audit_log SET purpose = 'Op X' WHERE seq = 2"))
    report = await verify(engine)
    assert not report.intact
    assert any("entry 2" in problem for problem in report.problems)


def _event() -> Any:
    return build_event(
        events_pb2.FeedbackRecorded(job="regions/EMSOU/jobs/x"),
        domain="tasking",
        source="test",
        region=Region.EMSOU,
    )


async def test_driver_unit_of_work_commits_changes_and_events_together_or_not_at_all(engine: Any) -> None:
    async with DriverUnitOfWork(engine) as uow:
        uow.publish(_event())
        await uow.remember_request("scope", "req-1", "f" * 64, "regions/EMSOU/jobs/1")
        await uow.commit()
    async with DriverUnitOfWork(engine) as uow:
        uow.publish(_event())
        await uow.remember_request("scope", "req-2", "f" * 64, "regions/EMSOU/jobs/2")
        # leaves without commit: nothing of it may remain
    with pytest.raises(RuntimeError):
        async with DriverUnitOfWork(engine) as uow:
            uow.publish(_event())
            await uow.remember_request("scope", "req-3", "f" * 64, "regions/EMSOU/jobs/3")
            raise RuntimeError("crash mid-change")
    async with engine.connect() as conn:
        outbox = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
        requests = (await conn.execute(select(idempotency_table.c.request_id))).scalars().all()
        headers = (await conn.execute(select(outbox_table.c.headers))).scalar_one()
    assert outbox == 1
    assert requests == ["req-1"]
    assert headers["ce-type"].endswith("FeedbackRecorded")

    async with DriverUnitOfWork(engine, read_only=True) as reader:
        assert await reader.recall_request("scope", "req-1", "f" * 64) == "regions/EMSOU/jobs/1"
        assert await reader.recall_request("scope", "req-9", "f" * 64) is None
        with pytest.raises(InvalidArgument):
            await reader.recall_request("scope", "req-1", "0" * 64)
        with pytest.raises(RuntimeError):
            reader.publish(_event())


async def test_pool_replaces_connections_the_server_closed(engine: Any, database: str) -> None:
    async with DriverUnitOfWork(engine, read_only=True) as uow:
        pid = await (await uow.connection()).fetchval("SELECT pg_backend_pid()")
    admin = create_engine(database, pool_size=1)
    async with admin.connect() as other:
        await other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    await admin.dispose()
    await asyncio.sleep(0.2)  # the closed socket is noticed by the event loop
    for _ in range(5):  # whichever pooled connection is handed out works
        async with DriverUnitOfWork(engine, read_only=True) as uow:
            assert await (await uow.connection()).fetchval("SELECT 1") == 1


async def test_a_write_only_unit_is_one_atomic_statement(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE parents (id text PRIMARY KEY)"))
        await conn.execute(
            text(
                "CREATE TABLE children (parent text NOT NULL REFERENCES parents (id), name text PRIMARY KEY)"
            )
        )
    parent = "INSERT INTO parents (id) VALUES ($1)"
    child = "INSERT INTO children (parent, name) VALUES ($1, $2)"

    # A child refers to a parent inserted in the same statement; the event goes with them, in the
    # same transaction (rows written by one transaction share its id, xmin).
    async with DriverUnitOfWork(engine) as uow:
        uow.write(parent, "p1")
        uow.write_many(child, [("p1", "c1"), ("p1", "c2")])
        uow.publish(_event())
        await uow.commit()
    async with engine.connect() as conn:
        written = await conn.execute(
            text(
                "SELECT xmin::text FROM parents UNION ALL SELECT xmin::text FROM children "
                "UNION ALL SELECT xmin::text FROM outbox"
            )
        )
        assert len(set(written.scalars().all())) == 1

    # A failure anywhere in the statement stores none of it.
    with pytest.raises(Exception, match="duplicate key"):
        async with DriverUnitOfWork(engine) as uow:
            uow.write(parent, "p2")
            uow.write(child, "p2", "c1")  # name taken
            uow.publish(_event())
            await uow.commit()
    async with engine.connect() as conn:
        parents = (await conn.execute(text("SELECT id FROM parents ORDER BY id"))).scalars().all()
        children = (await conn.execute(text("SELECT name FROM children ORDER BY name"))).scalars().all()
        events = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
    assert (parents, children, events) == (["p1"], ["c1", "c2"], 1)

    # A unit that reads first runs in a transaction and reads its own queued writes.
    async with DriverUnitOfWork(engine) as uow:
        uow.write(parent, "p3")
        conn = await uow.connection()
        assert await conn.fetchval("SELECT count(*) FROM parents WHERE id = 'p3'") == 1
        await uow.rollback()
    async with DriverUnitOfWork(engine, read_only=True) as reader:
        conn = await reader.connection()
        assert await conn.fetchval("SELECT count(*) FROM parents WHERE id = 'p3'") == 0


async def test_concurrent_write_only_units_are_group_committed_and_fail_alone(engine: Any) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE cases (id text PRIMARY KEY, region text NOT NULL)"))
    insert = "INSERT INTO cases (id, region) VALUES ($1, $2)"

    async def create(case_id: str) -> None:
        async with DriverUnitOfWork(engine) as uow:
            uow.write(insert, case_id, "EMSOU")
            uow.publish(_event())
            await uow.commit()

    await asyncio.gather(*(create(f"c{i}") for i in range(20)))
    async with engine.connect() as conn:
        transactions = (await conn.execute(text("SELECT count(DISTINCT xmin::text) FROM cases"))).scalar_one()
    assert transactions < 20  # units that committed together shared one transaction

    # c3 exists already: that unit fails, and only that one; its event is not stored either.
    outcomes = await asyncio.gather(
        *(create(case_id) for case_id in ("d1", "c3", "d2", "d3")), return_exceptions=True
    )
    assert [type(o).__name__ for o in outcomes] == [
        "NoneType",
        "UniqueViolationError",
        "NoneType",
        "NoneType",
    ]
    async with engine.connect() as conn:
        cases = (await conn.execute(text("SELECT count(*) FROM cases"))).scalar_one()
        events = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
    assert (cases, events) == (23, 23)


async def test_a_bulk_change_copies_its_events_in_the_same_transaction(engine: Any) -> None:
    from toex_common.db import session_factory
    from toex_common.uow import OUTBOX_COPY_FROM, SqlAlchemyUnitOfWork

    sessions = session_factory(engine)
    many = OUTBOX_COPY_FROM + 10
    # Only events (the COPY is the first statement: it must still be inside the transaction).
    async with SqlAlchemyUnitOfWork(sessions) as uow:
        for _ in range(many):
            uow.publish(_event())
        await uow.commit()
    # Events with a change, left without commit: neither remains.
    async with SqlAlchemyUnitOfWork(sessions) as uow:
        await uow.remember_request("scope", "bulk", "f" * 64, "regions/EMSOU/jobs/b")
        for _ in range(many):
            uow.publish(_event())
        await uow._copy_outbox()  # the rows are in; the transaction is not committed
        await uow.rollback()
    async with engine.connect() as conn:
        events = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
        headers = (await conn.execute(select(outbox_table.c.headers).limit(1))).scalar_one()
        requests = (await conn.execute(select(func.count()).select_from(idempotency_table))).scalar_one()
    assert (events, requests) == (many, 0)
    assert headers["ce-type"].endswith("FeedbackRecorded")


async def test_the_outbox_backlog_is_measured_and_exported_as_gauges(engine: Any) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from toex_common.events.outbox import outbox_backlog
    from toex_common.telemetry import OutboxGauges

    assert await outbox_backlog(engine) == (0, 0.0)
    async with DriverUnitOfWork(engine) as uow:
        for _ in range(3):
            uow.publish(_event())
        await uow.commit()
    await asyncio.sleep(0.2)
    waiting, oldest = await outbox_backlog(engine)
    assert waiting == 3 and oldest >= 0.2

    reader = InMemoryMetricReader()
    gauges = OutboxGauges(MeterProvider(metric_readers=[reader]).get_meter("test"))
    gauges.backlog, gauges.oldest_age = waiting, oldest
    data = reader.get_metrics_data()
    assert data is not None
    seen = {
        metric.name: point.value
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        for point in metric.data.data_points
    }
    assert seen == {"toex.outbox.backlog": 3, "toex.outbox.oldest_age": oldest}

    async with engine.begin() as conn:
        await conn.execute(text("UPDATE outbox SET published_at = now()"))
    assert await outbox_backlog(engine) == (0, 0.0)
