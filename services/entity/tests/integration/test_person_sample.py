"""The person sample on real PostgreSQL: the migration backfills it, resolution keeps it in the
record's transaction (bounded, following updated and deleted records), and the estimating
process reads it and nothing of the records table."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine
from toex_common.db import create_engine, session_factory
from toex_common.migrations import upgrade
from toex_entity import synthetic
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters import splink_model
from toex_entity.adapters.repository import SampleKeeper
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.domain import commands, matching
from toex_entity.domain.records import Grading, Handling, PersonData, RecordType
from toex_entity.service_layer import handlers
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

ACTOR = Principal("svc", "svc", Region.NATIONAL, frozenset({Role.SERVICE}))
GRADING = Grading(2, "B", Handling.P)

RECORD = """
INSERT INTO source_records (id, region, source_system, source_record_id, record_type,
  source_evaluation, assessment, handling, handling_conditions, content, identifiers, features,
  content_hash, entity_id, ingested_at, ingested_by, link_method, link_probability,
  linked_by, linked_at)
VALUES (:id, 'EMSOU', 'test', :rid, :type, 1, 'A', 'P', '', '{}', '{}', CAST(:features AS jsonb),
  'h', :eid, :at, 'test', 'new', 1.0, 'test', :at)
"""


def person(source_id: str, person: PersonData) -> commands.IncomingRecord:
    return commands.IncomingRecord(Region.EMSOU, "niche", source_id, RecordType.PERSON, GRADING, person)


def people(n: int, seed: int) -> list[commands.IncomingRecord]:
    return [person(g.record_id, g.person) for g in synthetic.generate(n, seed=seed, prefix=f"s{seed}-")]


async def rows(engine: AsyncEngine, sql: str) -> list[Any]:
    async with engine.connect() as conn:
        return list((await conn.execute(text(sql))).all())


@pytest.fixture
async def store(database: str) -> AsyncIterator[tuple[AsyncEngine, Any]]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine = create_engine(database, pool_size=2)
    try:
        yield engine, session_factory(engine)
    finally:
        await engine.dispose()


async def _backfill(database: str, persons: int, monkeypatch: pytest.MonkeyPatch, cap: int) -> AsyncEngine:
    await asyncio.to_thread(upgrade, database, migrations_dir(), "0010")
    engine = create_engine(database, pool_size=1)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        for i, g in enumerate(synthetic.generate(persons, seed=5)):
            features = orjson.dumps(matching.person_features(g.person)).decode()
            rid = f"r{i:04d}"
            await conn.execute(
                text(RECORD),
                {"id": rid, "rid": rid, "eid": rid, "type": "PERSON", "features": features, "at": now},
            )
        await conn.execute(
            text(RECORD),
            {"id": "phone1", "rid": "phone1", "eid": "phone1", "type": "PHONE", "features": None, "at": now},
        )
    monkeypatch.setenv("TOEX_LEARNING_SAMPLE_CAP", str(cap))
    await asyncio.to_thread(upgrade, database, migrations_dir())
    return engine


async def test_the_migration_backfills_a_bounded_sample_of_the_stored_persons(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await _backfill(database, 60, monkeypatch, cap=25)
    try:
        sampled = await rows(
            engine,
            "SELECT s.record_id, s.sample_key, s.features = r.features AS same "
            "FROM person_sample s JOIN source_records r ON r.id = s.record_id",
        )
        (state,) = await rows(engine, "SELECT threshold, size FROM person_sample_state")
    finally:
        await engine.dispose()
    assert len(sampled) == 25
    assert all(r.record_id.startswith("r") and r.same for r in sampled)  # persons only, as stored
    assert state.size == 25
    assert state.threshold == max(r.sample_key for r in sampled) < 1.0


async def test_a_store_within_the_cap_is_backfilled_whole(
    database: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = await _backfill(database, 40, monkeypatch, cap=1_000)
    try:
        sampled = await rows(engine, "SELECT record_id FROM person_sample")
        (state,) = await rows(engine, "SELECT threshold, size FROM person_sample_state")
    finally:
        await engine.dispose()
    assert len(sampled) == 40 and (state.threshold, state.size) == (1.0, 40)


async def test_resolution_keeps_the_sample_bounded_and_in_the_records_transaction(
    store: tuple[AsyncEngine, Any],
) -> None:
    engine, sessions = store
    keeper = SampleKeeper(cap=30)
    deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions, keeper))  # type: ignore[arg-type,return-value]
    for start in range(0, 600, 100):  # six transactions
        batch = people(600, seed=8)[start : start + 100]
        await handlers.resolve_records(commands.ResolveRecords(ACTOR, batch, single=False), deps)
    sampled = await rows(
        engine,
        "SELECT s.sample_key, s.features = r.features AS same FROM person_sample s "
        "JOIN source_records r ON r.id = s.record_id",
    )
    (state,) = await rows(engine, "SELECT threshold, size FROM person_sample_state")
    assert 30 <= len(sampled) <= 33 and state.size == len(sampled)
    assert state.threshold < 1.0 and all(r.sample_key <= state.threshold for r in sampled)
    assert all(r.same for r in sampled)
    assert keeper.threshold >= state.threshold  # the process never holds a lower one

    # A transaction that fails leaves neither its records nor their sample rows.
    class Failing(SqlEntityUnitOfWork):
        async def commit(self) -> None:
            raise RuntimeError("the database went away")

    wide = SampleKeeper(cap=100_000)
    failing = handlers.Deps(uow=lambda: Failing(sessions, wide))  # type: ignore[arg-type,return-value]
    lost = people(50, seed=9)
    with pytest.raises(RuntimeError, match="went away"):
        await handlers.resolve_records(commands.ResolveRecords(ACTOR, lost, single=False), failing)
    ids = ", ".join(f"'{r.source_record_id}'" for r in lost)
    assert await rows(engine, f"SELECT 1 FROM source_records WHERE source_record_id IN ({ids})") == []
    (after,) = await rows(engine, "SELECT count(*) AS n FROM person_sample")
    (state_after,) = await rows(engine, "SELECT size FROM person_sample_state")
    assert after.n == len(sampled) and state_after.size == state.size


async def test_an_updated_or_deleted_record_is_followed_by_the_sample(store: tuple[AsyncEngine, Any]) -> None:
    engine, sessions = store
    deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions, SampleKeeper(cap=1_000)))  # type: ignore[arg-type,return-value]
    first = PersonData(given_name="Kayleigh", surname="Morris", birth_date="2007-11-02")
    await handlers.resolve_records(commands.ResolveRecords(ACTOR, [person("k1", first)], single=True), deps)
    changed = PersonData(given_name="Kayleigh", surname="Morrison", birth_date="2007-11-02")
    await handlers.resolve_records(commands.ResolveRecords(ACTOR, [person("k1", changed)], single=True), deps)
    (row,) = await rows(
        engine,
        "SELECT s.features AS sampled, r.features AS stored, r.id FROM person_sample s "
        "JOIN source_records r ON r.id = s.record_id WHERE r.source_record_id = 'k1'",
    )
    assert (
        row.sampled == row.stored and row.sampled["surname"] == matching.person_features(changed)["surname"]
    )
    # Erasure (no path of the service deletes a record yet): the sample row goes with it.
    async with engine.begin() as conn:
        await conn.execute(text("DELETE FROM source_records WHERE id = :id"), {"id": row.id})
    assert await rows(engine, "SELECT 1 FROM person_sample") == []


async def test_the_estimate_reads_the_sample_and_not_the_records_table(
    store: tuple[AsyncEngine, Any], database: str
) -> None:
    engine, sessions = store
    deps = handlers.Deps(uow=lambda: SqlEntityUnitOfWork(sessions, SampleKeeper(cap=600)))  # type: ignore[arg-type,return-value]
    await handlers.resolve_records(commands.ResolveRecords(ACTOR, people(1_000, seed=12), single=False), deps)
    # A role that may read the sample and nothing else: the estimate runs as it.
    role = f"sample_reader_{uuid.uuid4().hex[:8]}"
    async with engine.begin() as conn:
        await conn.execute(text(f"CREATE ROLE {role} LOGIN PASSWORD 'reader'"))
        await conn.execute(text(f"GRANT SELECT ON person_sample, person_sample_state TO {role}"))
    reader = make_url(database).set(username=role, password="reader")
    reader_url = reader.render_as_string(hide_password=False)
    refused = create_engine(reader_url, pool_size=1)
    try:
        async with refused.connect() as conn:
            with pytest.raises(Exception, match="permission denied"):
                await conn.execute(text("SELECT 1 FROM source_records LIMIT 1"))
    finally:
        await refused.dispose()

    rows_read, about = await splink_model._sample(reader_url, 500)
    expected = await rows(
        engine, "SELECT record_id, features FROM person_sample ORDER BY sample_key LIMIT 500"
    )
    assert [(r.record_id, r.features) for r in expected] == rows_read
    assert 800 <= about <= 1_250  # the store's size, about (1,000 persons)

    model, seen = await splink_model.estimate_from_database(reader_url, 500)
    assert seen == 500 and model.prior > 0
    async with engine.begin() as conn:
        await conn.execute(text(f"DROP OWNED BY {role}"))
        await conn.execute(text(f"DROP ROLE {role}"))
