"""Finding 7, the notes: a referral's outcomes reached its job as AddJobNote calls made with the
safeguarding service's own token, a national identity that may write on any region's job.

Then they travelled as JobNoteRequested events on the referral's region's subject; now the job
shows the referral from the referral's own events (each names its job and state), and tasking
shows one only on a job of the event's region, as the safeguarding service acting in that region.
The attack: a publisher allowed on EMSOU's subjects (a leaked EMSOU credential) publishes a
referral event, labelled EMSOU as its subject demands, naming an ERSOU job. A consumer that acted
with the national identity, as the calls did, shows it on the ERSOU job. The JobNoteRequested
consumer stays for one release to drain the stream, so its forgeries are refused too."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import nats
from sqlalchemy import select
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.tasking.v1 import tasking_pb2 as tpb
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


async def linked(stack: Stack, job: str) -> list[tpb.LinkedReferral]:
    """The referrals the job shows, as a national coordinator reads it."""
    got = await stack.tasking.stub.GetJob(tpb.GetJobRequest(name=job), metadata=stack.tasking.md(NC))
    return list(got.job.linked_referrals)


def referral_event(job: str, created_by: str) -> Any:
    """A ReferralDrafted as anyone allowed on EMSOU's subjects can publish it."""
    referral = f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}"
    return build_event(
        sg_events.ReferralDrafted(
            referral=referral, linked_job=job, created_by=created_by, state=pb.REFERRAL_STATE_DRAFT
        ),
        domain="safeguarding",
        source="toex/safeguarding",
        region=Region.EMSOU,
        resource=referral,
    )


async def test_a_referral_shows_on_its_region_job_by_its_events(stack: Stack) -> None:
    """(a) An EMSOU referral linked to an EMSOU job: its draft shows on the job with its state,
    audited as the safeguarding service acting in EMSOU, for the referral; no note is written."""
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
    [shown] = await eventually(lambda: linked(stack, job), "the referral on its job")
    assert (shown.referral, shown.state) == (created.name, "DRAFT")
    assert [c.kind for c in shown.changes] == [tpb.REFERRAL_CHANGE_KIND_DRAFTED]
    assert created.subject.entity_id.encode() not in shown.SerializeToString()
    assert await stack.notes(job) == []
    async with stack.tasking.app.engine.connect() as conn:
        query = select(audit_table).where(audit_table.c.purpose == created.name)
        entries = await eventually(lambda: _rows(conn, query), "the change's audit entry", timeout=5.0)
    [entry] = entries
    assert (entry["actor_username"], entry["actor_region"], entry["outcome"]) == (SAFEGUARDING, "EMSOU", "OK")
    assert list(entry["resources"]) == [job]


async def test_a_forged_referral_event_for_another_region_job_is_never_shown(
    stack: Stack, nats_server
) -> None:  # type: ignore[no-untyped-def]
    """(b) Forged on EMSOU's subject, naming ERSOU's job, and ERSOU's job id under EMSOU's name:
    neither is shown, both are dead-lettered in EMSOU."""
    ersou_id = stack.jobs["ERSOU"].rsplit("/", 1)[-1]
    attacks = [
        referral_event(stack.jobs["ERSOU"], "FORGED"),
        referral_event(f"regions/EMSOU/jobs/{ersou_id}", "FORGED"),
    ]
    # A genuine event after them: once it shows, the consumer has been past the forgeries.
    genuine = referral_event(stack.jobs["EMSOU"], "genuine")
    nc = await nats.connect(nats_server.url)
    try:
        for event in (*attacks, genuine):
            assert event.subject == "toex.emsou.safeguarding.ReferralDrafted"
            await nc.jetstream().publish(event.subject, event.payload, headers=event.headers)
    finally:
        await nc.close()
    [shown] = await eventually(lambda: linked(stack, stack.jobs["EMSOU"]), "the genuine referral")
    assert shown.referral == genuine.headers["ce-subject"]
    assert await linked(stack, stack.jobs["ERSOU"]) == []

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
    assert "a referral of EMSOU may not be shown on a job of ERSOU" in reasons and "not found" in reasons
    # Nothing was shown for them, so nothing of theirs is audited either.
    async with stack.tasking.app.engine.connect() as conn:
        written = (
            await conn.execute(
                select(audit_table.c.resources).where(audit_table.c.action.like("consume %ReferralDrafted"))
            )
        ).scalars()
        assert {r[0] for r in written} == {stack.jobs["EMSOU"]}


async def test_a_forged_note_for_another_region_job_is_never_written(stack: Stack, nats_server) -> None:  # type: ignore[no-untyped-def]
    """(c) The notes still drained from the stream: forged on EMSOU's subject, naming ERSOU's job, and ERSOU's job id under EMSOU's name:
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
