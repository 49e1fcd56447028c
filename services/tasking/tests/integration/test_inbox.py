"""The inbox against a real tasking service: events of every source on a real nats-server (the
tasking ones made by real calls), read over gRPC with the tokens of different Keycloak users."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
import nats
import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy import select
from toex.entity.events.v1 import events_pb2 as entity_events
from toex.entity.v1 import entity_pb2
from toex.pnd.events.v1 import events_pb2 as pnd_events
from toex.pnd.v1 import sync_pb2
from toex.safeguarding.events.v1 import events_pb2 as sg_events
from toex.safeguarding.v1 import safeguarding_pb2 as sg
from toex.tasking.v1 import inbox_pb2 as ipb
from toex.tasking.v1 import inbox_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import region_pb2
from toex_common.db import audit_table
from toex_common.events import EventEnvelope, build_event
from toex_common.events.streams import ENTITY_STREAM, PND_STREAM, SAFEGUARDING_STREAM, ensure_stream
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

NC = "national_coordinator.national"
T = TypeVar("T")


def md(token: str, purpose: str | None = None) -> list[tuple[str, str]]:
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


def at(delta: timedelta) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + delta)
    return stamp


async def eventually(read: Callable[[], Awaitable[T]], done: Callable[[T], bool], seconds: float = 30) -> T:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    value = await read()
    while not done(value) and loop.time() < deadline:
        await asyncio.sleep(0.25)
        value = await read()
    return value


def envelope(message: Message, region: Region) -> EventEnvelope:
    domain = message.DESCRIPTOR.full_name.split(".")[1]
    return build_event(message, domain=domain, source=f"toex/{domain}", region=region)


async def publish(url: str, *events: EventEnvelope, msg_id: str | None = None) -> None:
    client = await nats.connect(url)
    try:
        js = client.jetstream()
        for spec in (ENTITY_STREAM, PND_STREAM, SAFEGUARDING_STREAM):  # as their owners declare them
            await ensure_stream(js, spec)
        for event in events:
            headers = dict(event.headers, **({"Nats-Msg-Id": msg_id} if msg_id else {}))
            await js.publish(event.subject, event.payload, headers=headers)
    finally:
        await client.close()


class Inbox:
    def __init__(self, tasking: Any) -> None:
        self.stub = inbox_pb2_grpc.InboxServiceStub(tasking.channel)
        self.tasking = tasking

    async def items(self, username: str, filter: str = "") -> list[ipb.InboxItem]:
        request = ipb.ListInboxItemsRequest(parent="users/me", filter=filter, page_size=100)
        response = await self.stub.ListInboxItems(request, metadata=md(self.tasking.token(username)))
        return list(response.inbox_items)

    async def about(self, username: str, filter: str = "") -> set[tuple[str, str]]:
        """(type, resource) of what `username` sees."""
        return {
            (ipb.InboxItemType.Name(i.type).removeprefix("INBOX_ITEM_TYPE_"), i.resource)
            for i in await self.items(username, filter)
        }

    async def mark(self, username: str, *names: str) -> int:
        request = ipb.MarkInboxItemsReadRequest(parent="users/me", names=list(names))
        response = await self.stub.MarkInboxItemsRead(request, metadata=md(self.tasking.token(username)))
        return response.marked_count


async def create_job(tasking: Any, due: timedelta) -> str:
    job = pb.Job(
        requesting_unit="Derbyshire Constabulary",
        requesting_officer="DS Example",
        operation_name=f"Op {uuid.uuid4().hex[:6].upper()}",
        job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
        priority=pb.PRIORITY_URGENT,
        due_time=at(due),
    )
    created = await tasking.stub.CreateJob(
        pb.CreateJobRequest(parent="regions/EMSOU", job=job), metadata=md(tasking.token(NC))
    )
    return created.job.name


async def test_every_source_reaches_its_people_and_nobody_else(tasking, nats_server) -> None:
    inbox, stub = Inbox(tasking), tasking.stub
    # Tasking's own events, by real calls: an EMSOU job for London, due in a moment (so overdue)...
    overdue_job = await create_job(tasking, timedelta(seconds=2))
    await stub.AssignJob(
        pb.AssignJobRequest(name=overdue_job, assignees=["researcher.london"]), metadata=md(tasking.token(NC))
    )
    # ...and one worked by EMSOU's researcher, delivered, with the officer's feedback.
    worked = await create_job(tasking, timedelta(days=5))
    supervisor = md(tasking.token("supervisor.emsou"))
    await stub.AssignJob(
        pb.AssignJobRequest(name=worked, assignees=["researcher.emsou"]), metadata=supervisor
    )
    researcher = md(tasking.token("researcher.emsou"))
    await stub.UpdateJobStatus(
        pb.UpdateJobStatusRequest(name=worked, state=pb.JOB_STATE_IN_PROGRESS), metadata=researcher
    )
    await stub.UpdateJobStatus(
        pb.UpdateJobStatusRequest(name=worked, state=pb.JOB_STATE_DELIVERED, product="Comms report"),
        metadata=researcher,
    )
    await stub.RecordFeedback(
        pb.RecordFeedbackRequest(name=worked, rating=5, comment="Found the controller"), metadata=supervisor
    )
    # The other services' events, as they publish them (each region's copy on its own subject).
    entity = f"entities/{uuid.uuid4().hex}"
    emsou_referral = f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}"
    ersou_referral = f"regions/ERSOU/referrals/{uuid.uuid4().hex[:16]}"
    record = f"regions/EMSOU/intelligence/{uuid.uuid4().hex[:16]}"

    def notice(other: Region) -> entity_events.DeconflictionNotice:
        return entity_events.DeconflictionNotice(
            entity=entity,
            entity_type=entity_pb2.RECORD_TYPE_PERSON,
            other_region=other.to_proto(),  # type: ignore[arg-type]
            contact_role=f"{other.value} ROCU: intelligence supervisor (deconfliction)",
        )

    def overdue(referral: str, escalation: int) -> sg_events.ReferralOverdue:
        return sg_events.ReferralOverdue(
            referral=referral,
            clock=sg.StatutoryClock(
                kind=sg.CLOCK_KIND_LOCAL_AUTHORITY_DECISION, due_time=at(-timedelta(days=2))
            ),
            escalation=escalation,  # type: ignore[arg-type]
            risk_level=sg.RISK_LEVEL_HIGH,
        )

    emsou_notice = envelope(notice(Region.ERSOU), Region.EMSOU)
    await publish(
        nats_server.url,
        emsou_notice,
        envelope(notice(Region.EMSOU), Region.ERSOU),
        envelope(
            pnd_events.SubmissionRejected(
                record=record,
                record_version=1,
                submission_id=f"{record}-1",
                operation=sync_pb2.SUBMISSION_OPERATION_CREATE,
                reasons=[
                    sync_pb2.RejectionReason(code="MISSING_FIELD", description="person.surname is empty")
                ],
            ),
            Region.EMSOU,
        ),
        envelope(overdue(emsou_referral, sg.ESCALATION_NATIONAL_COORDINATOR), Region.EMSOU),
        envelope(overdue(ersou_referral, sg.ESCALATION_SUPERVISOR), Region.ERSOU),
    )

    expected = {
        "supervisor.emsou": {
            ("JOB_OVERDUE", overdue_job),
            ("DECONFLICTION_NOTICE", entity),
            ("PND_SUBMISSION_REJECTED", record),
            ("REFERRAL_OVERDUE", emsou_referral),
        },
        "supervisor.ersou": {("DECONFLICTION_NOTICE", entity), ("REFERRAL_OVERDUE", ersou_referral)},
        NC: {("JOB_OVERDUE", overdue_job), ("REFERRAL_OVERDUE", emsou_referral)},
        # A national coordinator of a region holds the role nationally.
        "national_coordinator.emsou": {("JOB_OVERDUE", overdue_job), ("REFERRAL_OVERDUE", emsou_referral)},
        # An EMSOU job, addressed to London's researcher by name.
        "researcher.london": {("JOB_ASSIGNED", overdue_job)},
        "researcher.emsou": {("JOB_ASSIGNED", worked), ("FEEDBACK_RECORDED", worked)},
        "safeguarding_officer.emsou": {("REFERRAL_OVERDUE", emsou_referral)},
        "safeguarding_officer.ersou": {("REFERRAL_OVERDUE", ersou_referral)},
        "researcher.ersou": set(),
        "analyst.emsou": set(),
    }
    # The session's other tests publish on the same streams, which the inbox consumers read from
    # their start: only this test's resources count.
    ours = {overdue_job, worked, entity, record, emsou_referral, ersou_referral}

    async def about_ours(username: str) -> set[tuple[str, str]]:
        return {item for item in await inbox.about(username) if item[1] in ours}

    for username, wanted in expected.items():
        seen = await eventually(lambda u=username: about_ours(u), lambda s, w=wanted: s >= w)  # type: ignore[misc]
        assert seen == wanted, username

    # Items keep their event's region and handling code: London's is EMSOU's, C.
    [london] = [i for i in await inbox.items("researcher.london") if i.resource in ours]
    assert (london.label.region, london.addressed_to) == (region_pb2.REGION_EMSOU, "researcher.london")
    assert london.event_type == "toex.tasking.events.v2.JobAssigned"
    rejected = [i for i in await inbox.items("supervisor.emsou") if i.resource == record]
    assert "person.surname" not in rejected[0].summary and "MISSING_FIELD" in rejected[0].summary

    # The same event again (a new message id, as a broker redelivery would): still one item.
    await publish(nats_server.url, emsou_notice, msg_id=f"again-{emsou_notice.event_id}")
    await asyncio.sleep(1.0)
    assert [i.resource for i in await inbox.items("supervisor.emsou")].count(entity) == 1

    # Read state is each reader's own, also for an item addressed to a role both hold.
    [nc_overdue] = [i for i in await inbox.items(NC) if i.resource == overdue_job]
    assert await inbox.mark(NC, nc_overdue.name) == 1
    assert await inbox.mark(NC, nc_overdue.name) == 0
    assert ("JOB_OVERDUE", overdue_job) not in await inbox.about(NC, "read = false")
    assert ("JOB_OVERDUE", overdue_job) in await inbox.about(NC, "read = true")
    assert ("JOB_OVERDUE", overdue_job) in await inbox.about("national_coordinator.emsou", "read = false")

    # Another reader's item is not found, as a missing one, and nothing is marked.
    [emsou_item] = [i for i in await inbox.items("supervisor.emsou") if i.resource == entity]
    for name in (emsou_item.name, f"users/me/inboxItems/{uuid.uuid4().hex}"):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await inbox.mark("supervisor.ersou", name)
        assert refused.value.code() is grpc.StatusCode.NOT_FOUND
    assert not (await inbox.items("supervisor.emsou", "type = DECONFLICTION_NOTICE AND read = true"))

    # Filters by type.
    for text in (
        "(type = REFERRAL_OVERDUE OR type = JOB_OVERDUE)",
        "type = referral_overdue OR type = job_overdue",
    ):
        assert {i for i in await inbox.about("supervisor.emsou", text) if i[1] in ours} == {
            ("JOB_OVERDUE", overdue_job),
            ("REFERRAL_OVERDUE", emsou_referral),
        }

    # Audited by the interceptor, with no purpose asked for; the refused mark as out of scope.
    async with tasking.app.engine.connect() as conn:
        rows = (await conn.execute(select(audit_table))).mappings().all()
    inbox_calls = [r for r in rows if "/toex.tasking.v1.InboxService/" in r["action"]]
    assert any(
        r["actor_username"] == "supervisor.emsou"
        and r["action"].endswith("ListInboxItems")
        and r["outcome"] == "OK"
        for r in inbox_calls
    )
    assert any(
        r["actor_username"] == "supervisor.ersou" and r["outcome"] == "DENIED_OUT_OF_SCOPE"
        for r in inbox_calls
    )
    # Nobody reads another's inbox.
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await inbox.stub.ListInboxItems(
            ipb.ListInboxItemsRequest(parent="users/supervisor"),
            metadata=md(tasking.token("supervisor.ersou")),
        )
    assert other.value.code() is grpc.StatusCode.INVALID_ARGUMENT


async def test_a_watch_streams_the_caller_new_items_only(tasking, nats_server) -> None:
    inbox = Inbox(tasking)
    call = inbox.stub.WatchInbox(
        ipb.WatchInboxRequest(parent="users/me"), metadata=md(tasking.token("supervisor.ersou"))
    )
    started = await asyncio.wait_for(call.read(), 10)
    assert not started.HasField("inbox_item") and started.resume_token
    mine = f"regions/ERSOU/referrals/{uuid.uuid4().hex[:16]}"
    theirs = f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}"

    def overdue(referral: str) -> sg_events.ReferralOverdue:
        return sg_events.ReferralOverdue(referral=referral, escalation=sg.ESCALATION_SUPERVISOR)

    await publish(
        nats_server.url,
        envelope(overdue(theirs), Region.EMSOU),
        envelope(overdue(mine), Region.ERSOU),
    )

    # The inbox consumers may still be filling in other tests' events of the shared streams:
    # those arrive too, and are passed over.
    async def next_of(watch: Any, resources: set[str], seconds: float = 30) -> Any:
        async def read() -> Any:
            while True:
                answer = await watch.read()
                if answer.inbox_item.resource in resources:
                    return answer

        return await asyncio.wait_for(read(), seconds)

    got = await next_of(call, {mine, theirs})
    assert got.inbox_item.resource == mine and got.inbox_item.label.region == region_pb2.REGION_ERSOU
    call.cancel()

    # Resumed from the token of that item: nothing of this test's since; EMSOU's never comes.
    resumed = inbox.stub.WatchInbox(
        ipb.WatchInboxRequest(parent="users/me", resume_token=got.resume_token),
        metadata=md(tasking.token("supervisor.ersou")),
    )
    await asyncio.wait_for(resumed.read(), 10)  # started
    with pytest.raises(TimeoutError):
        await next_of(resumed, {mine, theirs}, 2.5)
    resumed.cancel()

    # Started after an item: that item's successors.
    following = inbox.stub.WatchInbox(
        ipb.WatchInboxRequest(parent="users/me", start_after=got.inbox_item.name),
        metadata=md(tasking.token("supervisor.ersou")),
    )
    await asyncio.wait_for(following.read(), 10)
    later = f"regions/ERSOU/referrals/{uuid.uuid4().hex[:16]}"
    await publish(nats_server.url, envelope(overdue(later), Region.ERSOU))
    assert (await next_of(following, {mine, theirs, later})).inbox_item.resource == later
    following.cancel()

    # Another region's item is no place for this reader to start.
    found = await eventually(
        lambda: inbox.items("supervisor.emsou", "type = REFERRAL_OVERDUE"),
        lambda found: any(i.resource == theirs for i in found),
    )
    [emsou_item] = [i for i in found if i.resource == theirs]
    refused = inbox.stub.WatchInbox(
        ipb.WatchInboxRequest(parent="users/me", start_after=emsou_item.name),
        metadata=md(tasking.token("supervisor.ersou")),
    )
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await refused.read()
    assert error.value.code() is grpc.StatusCode.NOT_FOUND
