"""A region's fingerprint backfill and the hub's matching, on real PostgreSQL: what the region
holds from before, or under a key added since, is published once per identifier and key; the
hub's stored fingerprints match within a key id, and a region that gave an identifier a new
reference is matched again for it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import select
from toex.entity.events.v1 import events_pb2 as ev
from toex_common.db import create_engine, outbox_table, session_factory
from toex_common.migrations import upgrade
from toex_entity.__main__ import migrations_dir
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.domain import commands
from toex_entity.domain.fingerprints import FingerprintKey, fingerprint
from toex_entity.domain.records import EmailData, Grading, Handling, PersonData, PhoneData, RecordType
from toex_entity.entrypoints.federation import Backfill
from toex_entity.service_layer import federation, handlers
from toex_kernel.clock import utcnow
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

K1 = FingerprintKey("2026-06", bytes(range(32)))
K2 = FingerprintKey("2026-12", bytes(range(5, 37)))
ANALYST = Principal("a", "analyst.emsou", Region.EMSOU, frozenset({Role.ANALYST}))


async def _published(engine: Any) -> list[ev.IdentifiersFingerprinted]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox_table.c.payload)
            .where(outbox_table.c.event_type == ev.IdentifiersFingerprinted.DESCRIPTOR.full_name)
            .order_by(outbox_table.c.seq)
        )
        return [ev.IdentifiersFingerprinted.FromString(r.payload) for r in rows]


async def test_backfill_publishes_each_identifier_once_per_key_and_again_under_a_new_key(
    database: str,
) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    engine = create_engine(database, pool_size=2)
    sessions = session_factory(engine)

    def uow() -> SqlEntityUnitOfWork:
        return SqlEntityUnitOfWork(sessions)

    try:
        deps = handlers.Deps(uow=uow)  # type: ignore[arg-type]
        grading = Grading(2, "B", Handling.C)
        records = [
            commands.IncomingRecord(
                Region.EMSOU, "niche", "p1", RecordType.PHONE, grading, PhoneData("07700 900123")
            ),
            commands.IncomingRecord(
                Region.EMSOU, "niche", "p2", RecordType.PHONE, grading, PhoneData("+447700900123")
            ),
            commands.IncomingRecord(
                Region.EMSOU,
                "niche",
                "n1",
                RecordType.PERSON,
                grading,
                PersonData(
                    surname="Morris", phone_numbers=("07700 900456",), identifiers=(("PNC", "12/3456A"),)
                ),
            ),
            commands.IncomingRecord(
                Region.EMSOU, "niche", "e1", RecordType.EMAIL, grading, EmailData("k@example.org")
            ),
        ]
        await handlers.resolve_records(commands.ResolveRecords(ANALYST, records, single=False), deps)

        # Records from before the region had a key: four identifiers (the number of p1 and p2 once).
        assert await Backfill(Region.EMSOU, (K1,), uow, batch=3).run_once() == 4  # type: ignore[arg-type]
        assert await Backfill(Region.EMSOU, (K1,), uow).run_once() == 0  # type: ignore[arg-type]
        # A key added: everything again under it, nothing again under the old one.
        assert await Backfill(Region.EMSOU, (K1, K2), uow).run_once() == 4  # type: ignore[arg-type]
        published = await _published(engine)
        by_key = {
            k: sum(len(p.fingerprints) for p in published if p.key_id == k) for k in (K1.key_id, K2.key_id)
        }
        assert by_key == {K1.key_id: 4, K2.key_id: 4}
        refs = [f.ref for p in published for f in p.fingerprints]
        assert len(set(refs)) == 8 and all(len(r) == 32 for r in refs)
        digests = {p.key_id: {f.digest for f in p.fingerprints} for p in published}
        assert not digests[K1.key_id] & digests[K2.key_id]  # a key's fingerprints say nothing of another's

        # The hub (its own tables in this database, as at the hub): EMSOU's K1 fingerprints, then
        # LONDON's of the same number under K1 and under K2: one match per key id.
        emsou = [(f.digest, f.ref) for p in published if p.key_id == K1.key_id for f in p.fingerprints]
        number = fingerprint(K1, "tel:+447700900123")
        assert number in {d for d, _ in emsou}
        role = "{} ROCU".format
        sent = []
        async with uow() as work:
            sent.append(
                await federation.match_fingerprints(
                    work, Region.EMSOU, K1.key_id, emsou, lambda r: role(r.value), utcnow()
                )
            )
            sent.append(
                await federation.match_fingerprints(
                    work, Region.LONDON, K1.key_id, [(number, "lon1")], lambda r: role(r.value), utcnow()
                )
            )
            sent.append(
                await federation.match_fingerprints(
                    work, Region.LONDON, K2.key_id, [(number, "lon2")], lambda r: role(r.value), utcnow()
                )
            )
            # Sent again: nothing; LONDON giving the identifier a new reference: matched again.
            sent.append(
                await federation.match_fingerprints(
                    work, Region.LONDON, K1.key_id, [(number, "lon1")], lambda r: role(r.value), utcnow()
                )
            )
            sent.append(
                await federation.match_fingerprints(
                    work, Region.LONDON, K1.key_id, [(number, "lon3")], lambda r: role(r.value), utcnow()
                )
            )
            await work.commit()
        assert sent == [0, 2, 0, 0, 2]
    finally:
        await engine.dispose()
