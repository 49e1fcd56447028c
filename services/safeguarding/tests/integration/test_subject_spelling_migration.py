"""Migration 0004: subjects spelt `entities/ID` (as tasking's job subjects arrive) become `ID`,
with their open-referral keys, except where that would give two open referrals one key."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest
from toex_common.migrations import upgrade
from toex_safeguarding.__main__ import migrations_dir

pytestmark = pytest.mark.integration

INSERT_REFERRAL = """
INSERT INTO referrals (id, region, state, subject_entity_id, subject, concerns, risk_level, evidence,
    destinations, destinations_chosen, progress, linked_job, handling, submitted_for_approval_by,
    approved_by, return_reason, close_reason, created_by, created_at, updated_at)
VALUES ($1, 'EMSOU', $2, $3, '{}', $4, 'LOW', '[]', '{}', false, '[]', '', 'C', '', '', '', '',
    'test', now(), now())"""
INSERT_KEY = "INSERT INTO open_referral_keys VALUES ('EMSOU', $1, $2, $3)"


async def test_subjects_get_one_spelling_where_no_key_collides(database: str) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir(), "0003")
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        # r1: alone, two concerns. r2 and r3: one person in both spellings, one concern in
        # common (r3 keeps its spelling, whole). r4: closed, holds no key.
        rows = [
            ("r1", "DRAFT", "entities/a", ["OTHER", "TRAFFICKING"]),
            ("r2", "DRAFT", "b", ["OTHER"]),
            ("r3", "DRAFT", "entities/b", ["OTHER", "TRAFFICKING"]),
            ("r4", "CLOSED", "entities/c", ["OTHER"]),
        ]
        for referral_id, state, subject, concerns in rows:
            await conn.execute(INSERT_REFERRAL, referral_id, state, subject, concerns)
            if state != "CLOSED":
                for concern in concerns:
                    await conn.execute(INSERT_KEY, subject, concern, referral_id)

        await asyncio.to_thread(upgrade, database, migrations_dir())

        subjects = dict(await conn.fetch("SELECT id, subject_entity_id FROM referrals"))  # type: ignore[arg-type]
        keys = sorted(
            tuple(r)
            for r in await conn.fetch(
                "SELECT referral_id, subject_entity_id, concern FROM open_referral_keys"
            )
        )
    finally:
        await conn.close()
    assert subjects == {"r1": "a", "r2": "b", "r3": "entities/b", "r4": "c"}
    assert keys == [
        ("r1", "a", "OTHER"),
        ("r1", "a", "TRAFFICKING"),
        ("r2", "b", "OTHER"),
        ("r3", "entities/b", "OTHER"),
        ("r3", "entities/b", "TRAFFICKING"),
    ]
