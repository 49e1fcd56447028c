"""Migration 0010 re-keys stored online accounts into toex_kernel.accounts' form."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from toex_common.migrations import upgrade
from toex_entity.__main__ import migrations_dir

pytestmark = pytest.mark.integration

RECORD = """
INSERT INTO source_records (id, region, source_system, source_record_id, record_type,
  source_evaluation, assessment, handling, handling_conditions, content, identifiers,
  content_hash, entity_id, ingested_at, ingested_by, link_method, link_probability,
  linked_by, linked_at)
VALUES (:id, 'EMSOU', 'test', :rid, 'PERSON', 1, 'A', 'P', '', '{}', CAST(:ids AS jsonb),
  'h', :eid, :at, 'test', 'new', 1.0, 'test', :at)
"""


async def test_stored_handle_keys_take_the_one_form(database: str) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir(), "0009")
    engine = create_async_engine(database)
    now = datetime.now(UTC)
    try:
        async with engine.begin() as conn:
            handles = ["twitter:abc", "insta:some.name", "myspace:keep"]
            await conn.execute(
                text(RECORD),
                {"id": "r1", "rid": "r1", "eid": "e1", "ids": json.dumps({"handles": handles}), "at": now},
            )
            await conn.execute(
                text(RECORD),
                {"id": "r2", "rid": "r2", "eid": "e2", "ids": json.dumps({"handles": []}), "at": now},
            )
            for key in (
                "handle:twitter:abc",
                "handle:insta:some.name",
                "handle:myspace:keep",
                "tel:+447700900101",
            ):
                await conn.execute(text("INSERT INTO record_keys VALUES (:k, 'r1')"), {"k": key})
            # A record already keyed in the new form: the re-keyed row meets it, once.
            await conn.execute(text("INSERT INTO record_keys VALUES ('handle:x:abc', 'r1')"))
        await asyncio.to_thread(upgrade, database, migrations_dir())
        async with engine.connect() as conn:
            keys = sorted(
                (await conn.execute(text("SELECT key FROM record_keys WHERE record_id = 'r1'"))).scalars()
            )
            ids = (
                await conn.execute(text("SELECT identifiers FROM source_records WHERE id = 'r1'"))
            ).scalar_one()
            untouched = (
                await conn.execute(text("SELECT identifiers FROM source_records WHERE id = 'r2'"))
            ).scalar_one()
    finally:
        await engine.dispose()
    assert keys == ["handle:instagram:some.name", "handle:myspace:keep", "handle:x:abc", "tel:+447700900101"]
    assert ids["handles"] == ["x:abc", "instagram:some.name", "myspace:keep"]
    assert untouched == {"handles": []}
