"""Finding 7, the notes: a referral's outcomes reached its job as AddJobNote calls made with the
safeguarding service's own token, a national identity that may write on any region's job.

Now they travel as JobNoteRequested events on the referral's region's subject, and tasking adds
a note only to a job of that region, written by the safeguarding service acting in that region.
The attack: a publisher allowed on EMSOU's subjects (a leaked EMSOU credential) publishes a
JobNoteRequested, labelled EMSOU as its subject demands, naming an ERSOU job. A consumer that
wrote notes with the national identity, as the calls did, writes it on the ERSOU job."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
from sqlalchemy import select
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex_common.db import audit_table
from toex_common.events import build_event
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region

from .conftest import Stack

NC, SO = "national_coordinator.national", "safeguarding_officer.emsou"
SAFEGUARDING = "service-account-toex-safeguarding"


async def eventually(probe: Any, what: str, timeout: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if found := await probe():
            return found
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


def note_event(job: str, text: str) -> Any:
    """A JobNoteRequested as anyone allowed on EMSOU's subjects can publish it."""
    referral = f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}"
    return build_event(
        sg_events.JobNoteRequested(referral=referral, job=job, note_id=uuid.uuid4().hex, text=text),
        domain="safeguarding",
        source="toex/safeguarding",
        region=Region.EMSOU,
        resource=referral,
    )


async def test_a_referral_note_lands_on_its_region_job_by_event(stack: Stack) -> None:
    """(a) An EMSOU referral linked to an EMSOU job: its draft is noted on the job, written and
    audited as the safeguarding service acting in EMSOU, for the referral."""
    job = stack.jobs["EMSOU"]
    created = (
        await stack.safeguarding.stub.CreateReferral(
            pb.CreateReferralRequest(
                parent="regions/EMSOU",
                referral=pb.Referral(
                    subject=pb.Subject(entity_id=f"ent-{uuid.uuid4().hex[:8]}", age_band=pb.AGE_BAND_CHILD),
                    concerns=[pb.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
                    linked_job=job,
                ),
            ),
            metadata=stack.safeguarding.md(SO),
        )
    ).referral
    [note] = await eventually(lambda: stack.notes(job), "the referral's note on its job")
    assert note.author == SAFEGUARDING and created.name in note.text and "drafted" in note.text
    async with stack.tasking.app.engine.connect() as conn:
        query = select(audit_table).where(audit_table.c.purpose == created.name)
        entries = await eventually(lambda: _rows(conn, query), "the note's audit entry", timeout=5.0)
    [entry] = entries
    assert (entry["actor_username"], entry["actor_region"], entry["outcome"]) == (SAFEGUARDING, "EMSOU", "OK")
    assert list(entry["resources"]) == [job, note.name]


async def test_a_forged_note_for_another_region_job_is_never_written(stack: Stack, nats_server) -> None:  # type: ignore[no-untyped-def]
    """(b) Forged on EMSOU's subject, naming ERSOU's job, and ERSOU's job id under EMSOU's name:
    neither is written, both are dead-lettered in EMSOU."""
    ersou_id = stack.jobs["ERSOU"].rsplit("/", 1)[-1]
    attacks = [
        note_event(stack.jobs["ERSOU"], "FORGED: note on another region's job"),
        note_event(f"regions/EMSOU/jobs/{ersou_id}", "FORGED: another region's job under this region's name"),
    ]
    # A genuine note after them: once it lands, the consumer has been past the forgeries.
    genuine = note_event(stack.jobs["EMSOU"], "genuine note after the forgeries")
    nc = await nats.connect(nats_server.url)
    try:
        for event in (*attacks, genuine):
            assert event.subject == "toex.emsou.safeguarding.JobNoteRequested"
            await nc.jetstream().publish(event.subject, event.payload, headers=event.headers)
    finally:
        await nc.close()
    await eventually(
        lambda: _has(stack.notes(stack.jobs["EMSOU"]), "genuine note after the forgeries"), "the genuine note"
    )
    assert await stack.notes(stack.jobs["ERSOU"]) == []
    assert not any("FORGED" in n.text for n in await stack.notes(stack.jobs["EMSOU"]))

    # Both sit in EMSOU's dead letters (the subject's region), with the reason.
    ids = {event.event_id for event in attacks}

    def dead(messages: list[Any]) -> list[Any]:
        return [m for m in messages if m.headers.get("ce-id") in ids]

    letters = dead(
        await stream_messages(
            nats_server.url, "toex.*.deadletter.>", until=lambda found: len(dead(found)) == 2
        )
    )
    assert sorted(m.subject.split(".")[1] for m in letters) == ["emsou", "emsou"]
    reasons = " ".join(m.headers["toex-dead-reason"] for m in letters)
    assert "EMSOU may not go on a job of ERSOU" in reasons
    # Nothing was written for them, so no note of theirs is audited either.
    async with stack.tasking.app.engine.connect() as conn:
        written = (
            await conn.execute(
                select(audit_table.c.resources).where(audit_table.c.action.like("consume %JobNoteRequested"))
            )
        ).scalars()
        assert {r[0] for r in written} == {stack.jobs["EMSOU"]}


async def _rows(conn: Any, query: Any) -> list[Any]:
    return list((await conn.execute(query)).mappings().all())


async def _has(found: Any, text: str) -> bool:
    return any(n.text == text for n in await found)
