"""Migration 0002: the notes job_note_outbox still held become JobNoteRequested events in the
platform outbox, and the table goes."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.type.v1 import region_pb2, security_pb2
from toex_common.migrations import upgrade
from toex_safeguarding.__main__ import migrations_dir

pytestmark = pytest.mark.integration

INSERT_REFERRAL = """
INSERT INTO referrals (id, region, state, subject_entity_id, subject, concerns, risk_level, evidence,
    destinations, destinations_chosen, progress, linked_job, handling, submitted_for_approval_by,
    approved_by, return_reason, close_reason, created_by, created_at, updated_at)
VALUES ($1, $2, 'DRAFT', 'ent-1', '{}', '{OTHER}', 'LOW', '[]', '{}', false, '[]', $3, $4, '', '', '', '',
    'test', now(), now())"""
INSERT_NOTE = """
INSERT INTO job_note_outbox (id, job, referral, text, created_at, attempts, next_attempt_at, sent_at,
    failed_at, last_error)
VALUES ($1, $2, $3, $4, $5, $6, $5, $7, $8, $9)"""


async def test_undelivered_notes_move_into_the_outbox_as_events(database: str) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir(), "0001")
    conn = await asyncpg.connect(database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        emsou, ersou = "regions/EMSOU/jobs/j1", "regions/ERSOU/jobs/j2"
        await conn.execute(INSERT_REFERRAL, "r1", "EMSOU", emsou, "P")
        await conn.execute(INSERT_REFERRAL, "r2", "ERSOU", ersou, "C")
        queued = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
        pending, refused, sent = (str(uuid.uuid4()) for _ in range(3))
        notes = [
            # Waiting for tasking to come back.
            (
                pending,
                emsou,
                "regions/EMSOU/referrals/r1",
                "Referral approved.",
                queued,
                3,
                None,
                None,
                "down",
            ),
            # Refused for good by the old relay: another chance, and a dead letter if refused again.
            (
                refused,
                ersou,
                "regions/ERSOU/referrals/r2",
                "Referral drafted.",
                queued,
                1,
                None,
                queued,
                "NF",
            ),
            # On its job already.
            (sent, emsou, "regions/EMSOU/referrals/r1", "Referral drafted.", queued, 1, queued, None, None),
        ]
        for note in notes:
            await conn.execute(INSERT_NOTE, *note)

        await asyncio.to_thread(upgrade, database, migrations_dir())

        assert await conn.fetchval("SELECT to_regclass('job_note_outbox')") is None
        rows = await conn.fetch("SELECT subject, event_type, payload, headers FROM outbox ORDER BY seq")
    finally:
        await conn.close()
    by_note = {}
    for row in rows:
        assert row["event_type"] == sg_events.JobNoteRequested.DESCRIPTOR.full_name
        message = sg_events.JobNoteRequested.FromString(row["payload"])
        by_note[message.note_id] = (row["subject"], message)
    assert set(by_note) == {pending.replace("-", ""), refused.replace("-", "")}
    subject, message = by_note[pending.replace("-", "")]
    assert subject == "toex.emsou.safeguarding.JobNoteRequested"
    assert (message.job, message.referral, message.text) == (
        emsou,
        "regions/EMSOU/referrals/r1",
        "Referral approved.",
    )
    assert message.label.region == region_pb2.REGION_EMSOU
    assert message.label.handling == security_pb2.HANDLING_CODE_P
    assert message.occur_time.ToDatetime(tzinfo=UTC) == queued  # when it was queued, not migrated
    subject, message = by_note[refused.replace("-", "")]
    assert subject == "toex.ersou.safeguarding.JobNoteRequested"
    assert message.label.handling == security_pb2.HANDLING_CODE_C
