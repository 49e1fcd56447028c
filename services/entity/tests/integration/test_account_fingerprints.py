"""Bank accounts in the deconfliction fingerprints, on real PostgreSQL: a region's account
(the target of a HOLDS_ACCOUNT relation) is published as a keyed fingerprint by the backfill,
once per key, and a match from the hub tells the person holding it; neither what the region
publishes nor what the hub stores holds the account's sort code or number."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from sqlalchemy import select
from toex.entity.events.v1 import events_pb2 as ev
from toex_common.db import create_engine, outbox_table, session_factory
from toex_common.migrations import upgrade
from toex_common.testing.leakscan import leaks, table_contents
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.domain import accounts, commands
from toex_entity.domain.fingerprints import FingerprintKey, fingerprint
from toex_entity.domain.records import Grading, Handling, PersonData, RecordType
from toex_entity.domain.relations import Relation, RelationKind
from toex_entity.entrypoints.federation import Backfill
from toex_entity.service_layer import federation, handlers
from toex_kernel.clock import utcnow
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

K1 = FingerprintKey("2026-06", bytes(range(32)))
ANALYST = Principal("a", "analyst.emsou", Region.EMSOU, frozenset({Role.ANALYST}))
GRADING = Grading(2, "B", Handling.C)
SORT_CODE, NUMBER = "089999", "66374958"  # Vocalink's published standard modulus 10 example


async def _outbox(engine: Any, event_type: str) -> list[tuple[bytes, dict[str, Any]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox_table.c.payload, outbox_table.c.headers)
            .where(outbox_table.c.event_type == event_type)
            .order_by(outbox_table.c.seq)
        )
        return [(r.payload, r.headers) for r in rows]


async def test_an_account_is_fingerprinted_and_a_match_tells_its_holder(database: str, postgres: Any) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    hub_name = f"t_hub_accounts_{uuid.uuid4().hex[:10]}"
    hub_database = postgres.create_database(hub_name)
    await asyncio.to_thread(upgrade, hub_database, migrations_dir())
    engine = create_engine(database, pool_size=2)
    hub_engine = create_engine(hub_database, pool_size=2)
    sessions, hub_sessions = session_factory(engine), session_factory(hub_engine)

    def uow() -> SqlEntityUnitOfWork:
        return SqlEntityUnitOfWork(sessions)

    try:
        deps = handlers.Deps(uow=uow)  # type: ignore[arg-type]
        person = commands.IncomingRecord(
            Region.EMSOU,
            "niche",
            "n1",
            RecordType.PERSON,
            GRADING,
            PersonData(given_name="Sam", surname="Okafor"),
        )
        (result,) = await handlers.resolve_records(
            commands.ResolveRecords(ANALYST, [person], single=False), deps
        )
        account = accounts.uk_account(SORT_CODE, NUMBER)
        async with uow() as work:
            relation = Relation(
                "EMSOU",
                RelationKind.HOLDS_ACCOUNT,
                result.entity_id,
                account.key,
                "bank-returns",
                "r1",
                GRADING,
            )
            assert await work.relations.add_relations([relation], "analyst.emsou", utcnow()) == 1
            await work.commit()

        # The backfill publishes the account (with nothing else: the person has no identifier).
        assert await Backfill(Region.EMSOU, (K1,), uow).run_once() == 1  # type: ignore[arg-type]
        assert await Backfill(Region.EMSOU, (K1,), uow).run_once() == 0  # type: ignore[arg-type]
        rows = await _outbox(engine, ev.IdentifiersFingerprinted.DESCRIPTOR.full_name)
        (published,) = [ev.IdentifiersFingerprinted.FromString(p) for p, _ in rows]
        (fp,) = published.fingerprints
        assert fp.digest == fingerprint(K1, account.key)
        secrets = {SORT_CODE, NUMBER, "08-99-99", account.key}
        scanned = [
            (f"outbox {i}", payload + repr(headers).encode()) for i, (payload, headers) in enumerate(rows)
        ]
        assert not leaks(scanned, secrets)

        # The hub (a database of its own) stores EMSOU's fingerprint and LONDON's of the same
        # account, and addresses a match to each.
        role = "{} ROCU".format
        async with SqlEntityUnitOfWork(hub_sessions) as hub:
            assert (
                await federation.match_fingerprints(
                    hub, Region.EMSOU, K1.key_id, [(fp.digest, fp.ref)], lambda r: role(r.value), utcnow()
                )
                == 0
            )
            london = fingerprint(K1, accounts.uk_account("08-99-99", NUMBER).key)
            assert (
                await federation.match_fingerprints(
                    hub, Region.LONDON, K1.key_id, [(london, "lon1")], lambda r: role(r.value), utcnow()
                )
                == 2
            )
            await hub.commit()
        hub_rows = await table_contents(hub_database.replace("postgresql+asyncpg://", "postgresql://", 1))
        assert hub_rows, "the scan read nothing"
        assert not leaks(hub_rows, secrets)
        # The same scan finds the account where it is: in the region's own tables.
        region_rows = await table_contents(database.replace("postgresql+asyncpg://", "postgresql://", 1))
        assert leaks(region_rows, {account.key})

        # EMSOU told by the hub: the person holding the account gets the notice.
        async with uow() as work:
            told = await federation.on_match(
                work, Region.EMSOU, fp.ref, Region.LONDON, "LONDON ROCU", utcnow()
            )
            await work.commit()
        assert told == 1
        notices = await _outbox(engine, ev.DeconflictionNotice.DESCRIPTOR.full_name)
        (notice,) = [ev.DeconflictionNotice.FromString(p) for p, _ in notices]
        assert notice.entity == f"entities/{result.entity_id}"
    finally:
        await engine.dispose()
        await hub_engine.dispose()
        postgres.drop_database(hub_name)
