"""Safeguarding referral events on NATS, shown on their job by the real tasking service: the
latest change wins, a repeat is one change, each is audited, and an event naming another
region's job is dead-lettered and never shown."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import nats
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.v1 import tasking_pb2 as pb
from toex_common.audit import verify
from toex_common.db import audit_table
from toex_common.events import EventEnvelope, build_event
from toex_common.testing.streams import stream_messages
from toex_kernel.regions import Region

from .test_tasking_service import NC, job_request, md

pytestmark = pytest.mark.integration

SAFEGUARDING = "service-account-toex-safeguarding"
T0 = datetime.now(UTC).replace(microsecond=0)


def referral_event(message: Message, at: datetime, region: Region = Region.EMSOU) -> EventEnvelope:
    return build_event(
        message,
        domain="safeguarding",
        source="toex/safeguarding",
        region=region,
        resource=message.referral,  # type: ignore[attr-defined]
        occurred_at=at,
    )


async def publish(nats_url: str, events: list[tuple[EventEnvelope, str | None]]) -> None:
    """Publish each event (under another message id when one is given: a peer's retry)."""
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        for event, msg_id in events:
            headers = dict(event.headers, **({"Nats-Msg-Id": msg_id} if msg_id else {}))
            await js.publish(event.subject, event.payload, headers=headers)
    finally:
        await nc.close()


async def eventually(probe: Callable[[], Awaitable[Any]], what: str, timeout: float = 30.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        if found := await probe():
            return found
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_referral_events_show_on_their_job_and_forgeries_are_dead_lettered(
    tasking, nats_server
) -> None:
    stub, coordinator = tasking.stub, md(tasking.token(NC))
    job = (await stub.CreateJob(job_request("EMSOU"), metadata=coordinator)).job
    ersou_job = (await stub.CreateJob(job_request("ERSOU"), metadata=coordinator)).job
    referral = f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}"

    due = Timestamp()
    due.FromDatetime(T0 + timedelta(days=1))
    drafted = referral_event(
        sg_events.ReferralDrafted(
            referral=referral,
            linked_job=job.name,
            concerns=[sg.CONCERN_CHILD_CRIMINAL_EXPLOITATION],
            risk_level=sg.RISK_LEVEL_HIGH,
            created_by="trigger:JobCreated",
            state=sg.REFERRAL_STATE_DRAFT,
        ),
        T0,
    )
    approved = referral_event(
        sg_events.ReferralApproved(
            referral=referral,
            linked_job=job.name,
            approved_by="supervisor.emsou",
            destinations=[sg.DESTINATION_CHILDRENS_SOCIAL_CARE],
            state=sg.REFERRAL_STATE_APPROVED,
        ),
        T0 + timedelta(hours=2),
    )
    # Happened before the approval, arrives after it.
    late = referral_event(
        sg_events.ReferralReturned(
            referral=referral,
            linked_job=job.name,
            returned_by="supervisor.emsou",
            reason="FREE TEXT about the subject",
            state=sg.REFERRAL_STATE_DRAFT,
        ),
        T0 + timedelta(hours=1),
    )
    # On EMSOU's subject (all a leaked EMSOU credential allows): ERSOU's job, and ERSOU's job id
    # under EMSOU's name.
    forged = [
        referral_event(
            sg_events.ReferralDrafted(
                referral=f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}",
                linked_job=target,
                created_by="FORGED",
                state=sg.REFERRAL_STATE_DRAFT,
            ),
            T0,
        )
        for target in (ersou_job.name, ersou_job.name.replace("regions/ERSOU/", "regions/EMSOU/"))
    ]
    # Another referral of the job, linked to a second job since.
    second_job = (await stub.CreateJob(job_request("EMSOU"), metadata=coordinator)).job
    moved = f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}"
    moved_events = [
        referral_event(
            sg_events.ReferralDrafted(
                referral=moved, linked_job=job.name, created_by="x", state=sg.REFERRAL_STATE_DRAFT
            ),
            T0,
        ),
        referral_event(
            sg_events.ReferralApproved(
                referral=moved, linked_job=second_job.name, approved_by="y", state=sg.REFERRAL_STATE_APPROVED
            ),
            T0 + timedelta(hours=1),
        ),
    ]
    await publish(
        nats_server.url,
        [
            *((m, None) for m in moved_events),
            (drafted, None),
            (drafted, f"again-{drafted.event_id}"),  # the same event delivered twice: the inbox
            (approved, None),
            (late, None),
            *((f, None) for f in forged),
        ],
    )

    async def linked(name: str = job.name, username: str = NC) -> list[pb.LinkedReferral]:
        got = await stub.GetJob(pb.GetJobRequest(name=name), metadata=md(tasking.token(username)))
        return list(got.job.linked_referrals)

    async def three_changes() -> list[pb.LinkedReferral]:
        found = await linked()
        return found if found and len(found[0].changes) == 3 else []

    [shown] = await eventually(three_changes, "the referral's three changes on its job")
    assert (shown.referral, shown.state, list(shown.concerns), shown.risk_level) == (
        referral,
        "APPROVED",  # the latest change, not the last to arrive
        ["CHILD_CRIMINAL_EXPLOITATION"],
        "HIGH",
    )
    assert [(c.kind, c.state, c.event_id) for c in shown.changes] == [
        (pb.REFERRAL_CHANGE_KIND_DRAFTED, "DRAFT", drafted.event_id),
        (pb.REFERRAL_CHANGE_KIND_RETURNED, "DRAFT", late.event_id),
        (pb.REFERRAL_CHANGE_KIND_APPROVED, "APPROVED", approved.event_id),
    ]
    assert shown.update_time.ToDatetime(tzinfo=UTC) == T0 + timedelta(hours=2)
    assert not any("FREE TEXT" in c.summary for c in shown.changes)
    # The region's own supervisor reads it on the job; the list shows it without its changes.
    assert [r.referral for r in await linked(username="supervisor.emsou")] == [referral]
    listed = await stub.ListJobs(pb.ListJobsRequest(parent="regions/EMSOU"), metadata=coordinator)
    [in_list] = [j for j in listed.jobs if j.name == job.name]
    assert [(r.referral, r.state, len(r.changes)) for r in in_list.linked_referrals] == [
        (referral, "APPROVED", 0)
    ]
    [in_list] = [j for j in listed.jobs if j.name == second_job.name]
    assert [(r.referral, r.state) for r in in_list.linked_referrals] == [(moved, "APPROVED")]
    [on_second] = await linked(second_job.name)
    assert [c.kind for c in on_second.changes] == [pb.REFERRAL_CHANGE_KIND_APPROVED]

    # The forgeries sit in EMSOU's dead letters (the subject's region), with the reason; ERSOU's
    # job shows nothing, and neither does EMSOU's.
    ids = {f.event_id for f in forged}

    def dead(messages: list[Any]) -> list[Any]:
        return [m for m in messages if m.headers.get("ce-id") in ids]

    letters = dead(
        await stream_messages(
            nats_server.url,
            "toex.emsou.deadletter.tasking-referral-outcomes",
            until=lambda found: len(dead(found)) == 2,
            wait=30,
        )
    )
    assert len(letters) == 2
    reasons = " ".join(m.headers["toex-dead-reason"] for m in letters)
    assert "a referral of EMSOU may not be shown on a job of ERSOU" in reasons and "not found" in reasons
    assert await linked(ersou_job.name) == []
    assert [r.referral for r in await linked()] == [referral]
    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await linked(username="researcher.ersou")
    assert hidden.value.code() is grpc.StatusCode.NOT_FOUND

    # Closed: the state moves on.
    closed = referral_event(
        sg_events.ReferralClosed(
            referral=referral,
            linked_job=job.name,
            reason="child safeguarded",
            closed_by="safeguarding_officer.emsou",
            previous_state=sg.REFERRAL_STATE_APPROVED,
            state=sg.REFERRAL_STATE_CLOSED,
        ),
        T0 + timedelta(hours=3),
    )
    await publish(nats_server.url, [(closed, None)])

    async def is_closed() -> bool:
        found = await linked()
        return bool(found) and found[0].state == "CLOSED"

    await eventually(is_closed, "the referral closed on its job")
    assert (await linked())[0].changes[-1].summary == (
        "Closed from approved by safeguarding_officer.emsou: child safeguarded"
    )

    # Each change audited once, as the safeguarding service acting in EMSOU, for the referral;
    # nothing for the forgeries.
    referrals = [referral, *(f.headers["ce-subject"] for f in forged)]

    async def audited() -> list[Any]:
        async with tasking.app.engine.connect() as conn:
            query = select(audit_table).where(audit_table.c.purpose.in_(referrals))
            return list((await conn.execute(query)).mappings().all())

    entries = await eventually(lambda: _at_least(audited, 4), "the changes' audit entries", timeout=10)
    assert sorted(e["action"].rsplit(".", 1)[-1] for e in entries) == [
        "ReferralApproved",
        "ReferralClosed",
        "ReferralDrafted",
        "ReferralReturned",
    ]
    for entry in entries:
        assert (entry["actor_username"], entry["actor_region"], entry["outcome"]) == (
            SAFEGUARDING,
            "EMSOU",
            "OK",
        )
        assert (entry["purpose"], list(entry["resources"])) == (referral, [job.name])
    assert (await verify(tasking.app.engine)).intact


async def _at_least(probe: Callable[[], Awaitable[list[Any]]], count: int) -> list[Any]:
    found = await probe()
    return found if len(found) >= count else []
