"""The tasking service against real PostgreSQL, nats-server and Keycloak."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import nats
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select, text
from toex.tasking.events.v2 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex_common.audit import verify
from toex_common.db import audit_table
from toex_common.events.outbox import pending
from toex_common.testing.streams import stream_messages

pytestmark = pytest.mark.integration

NC = "national_coordinator.national"


def md(token: str, purpose: str | None = "Op SANDPIPER") -> list[tuple[str, str]]:
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


def due(days: float = 5) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return stamp


def job_request(region: str = "EMSOU", **fields: object) -> pb.CreateJobRequest:
    job = pb.Job(
        requesting_unit="Derbyshire Constabulary",
        requesting_officer="DS Example",
        operation_name=f"Op {uuid.uuid4().hex[:6].upper()}",
        job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
        priority=pb.PRIORITY_URGENT,
        due_time=due(),
        description="Phone number index for persons of interest",
    )
    for key, value in fields.items():
        setattr(job, key, value)
    return pb.CreateJobRequest(parent=f"regions/{region}", job=job)


async def test_create_read_scope_events_and_audit(tasking, nats_server) -> None:
    stub = tasking.stub
    created = (await stub.CreateJob(job_request(), metadata=md(tasking.token(NC)))).job
    assert created.name.startswith("regions/EMSOU/jobs/")
    assert created.state == pb.JOB_STATE_RAISED
    assert created.created_by == NC

    read = await stub.GetJob(
        pb.GetJobRequest(name=created.name), metadata=md(tasking.token("researcher.emsou"))
    )
    assert read.job.operation_name == created.operation_name

    with pytest.raises(grpc.aio.AioRpcError) as hidden:
        await stub.GetJob(pb.GetJobRequest(name=created.name), metadata=md(tasking.token("researcher.ersou")))
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.GetJob(
            pb.GetJobRequest(name="regions/EMSOU/jobs/doesnotexist"),
            metadata=md(tasking.token("researcher.ersou")),
        )
    assert hidden.value.code() is missing.value.code() is grpc.StatusCode.NOT_FOUND
    assert hidden.value.details().replace(created.name, "X") == missing.value.details().replace(
        "regions/EMSOU/jobs/doesnotexist", "X"
    )

    with pytest.raises(grpc.aio.AioRpcError) as no_purpose:
        await stub.GetJob(
            pb.GetJobRequest(name=created.name), metadata=md(tasking.token("researcher.emsou"), None)
        )
    assert no_purpose.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    with pytest.raises(grpc.aio.AioRpcError) as analyst:
        await stub.GetJob(pb.GetJobRequest(name=created.name), metadata=md(tasking.token("analyst.emsou")))
    assert analyst.value.code() is grpc.StatusCode.PERMISSION_DENIED

    def about_job(messages: list) -> list:
        return [m for m in messages if m.headers.get("ce-subject") == created.name]

    [message] = about_job(
        await stream_messages(
            nats_server.url, "toex.emsou.tasking.JobCreated", until=lambda found: bool(about_job(found))
        )
    )
    event = events_pb2.JobCreated.FromString(message.data)
    assert event.job == created.name and event.access.state == events_pb2.JOB_STATE_RAISED
    assert message.headers["ce-type"] == "toex.tasking.events.v2.JobCreated"
    assert message.headers["Nats-Msg-Id"] == event.event_id
    assert message.headers["toex-region"] == "EMSOU"

    async with tasking.app.engine.connect() as conn:
        rows = (await conn.execute(select(audit_table).order_by(audit_table.c.seq))).mappings().all()
    outcomes = [(r["actor_username"], r["action"].rsplit("/", 1)[-1], r["outcome"]) for r in rows]
    assert (NC, "CreateJob", "OK") in outcomes
    assert ("researcher.emsou", "GetJob", "OK") in outcomes
    assert ("researcher.ersou", "GetJob", "DENIED_OUT_OF_SCOPE") in outcomes
    assert ("researcher.ersou", "GetJob", "NOT_FOUND") in outcomes
    assert ("analyst.emsou", "GetJob", "PERMISSION_DENIED") in outcomes
    denied = next(r for r in rows if r["outcome"] == "DENIED_OUT_OF_SCOPE")
    assert denied["resources"] == [created.name] and denied["actor_region"] == "ERSOU"
    assert denied["purpose"] == "Op SANDPIPER"
    assert (await verify(tasking.app.engine)).intact


async def test_invalid_create_reports_every_field(tasking) -> None:
    request = job_request(requesting_unit="", operation_name="")
    request.job.due_time.CopyFrom(due(-1))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await tasking.stub.CreateJob(request, metadata=md(tasking.token(NC)))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    details = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(details)
    assert {v.field for v in details.field_violations} == {
        "job.requesting_unit",
        "job.operation_name",
        "job.due_time",
    }


async def test_lifecycle_with_directory_reassignment_and_idempotency(tasking, nats_server) -> None:
    stub = tasking.stub
    sup = md(tasking.token("supervisor.emsou"))
    request = job_request()
    request.request_id = str(uuid.uuid4())
    first = (await stub.CreateJob(request, metadata=sup)).job
    again = (await stub.CreateJob(request, metadata=sup)).job
    assert again.name == first.name

    with pytest.raises(grpc.aio.AioRpcError) as wrong_region:
        await stub.AssignJob(
            pb.AssignJobRequest(name=first.name, assignees=["researcher.london"]), metadata=sup
        )
    assert wrong_region.value.code() is grpc.StatusCode.INVALID_ARGUMENT

    job = (
        await stub.AssignJob(
            pb.AssignJobRequest(name=first.name, assignees=["researcher.emsou"]), metadata=sup
        )
    ).job
    assert job.state == pb.JOB_STATE_ASSIGNED
    job = (
        await stub.ReassignJob(
            pb.ReassignJobRequest(name=first.name, assignee="researcher.london", reason="tasking resilience"),
            metadata=sup,
        )
    ).job
    assert [a.username for a in job.assignees] == ["researcher.london"]
    assert job.owning_region == pb.Job().owning_region + 1  # REGION_EMSOU

    london = md(tasking.token("researcher.london"))
    await stub.UpdateJobStatus(
        pb.UpdateJobStatusRequest(name=first.name, state=pb.JOB_STATE_IN_PROGRESS), metadata=london
    )
    capacity = await stub.GetRegionCapacity(
        pb.GetRegionCapacityRequest(name="regions/EMSOU/capacity"), metadata=sup
    )
    load = {r.username: r.open_jobs for r in capacity.researchers}
    assert load["researcher.london"] == 1  # holds the EMSOU job
    assert load["researcher.emsou"] == 0  # in the directory, nothing open
    with pytest.raises(grpc.aio.AioRpcError) as skip:
        await stub.UpdateJobStatus(
            pb.UpdateJobStatusRequest(name=first.name, state=pb.JOB_STATE_CLOSED), metadata=sup
        )
    assert skip.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    await stub.AddJobNote(
        pb.AddJobNoteRequest(parent=first.name, text="Two further numbers found"), metadata=london
    )
    await stub.UpdateJobStatus(
        pb.UpdateJobStatusRequest(
            name=first.name, state=pb.JOB_STATE_DELIVERED, product="Network chart and briefing"
        ),
        metadata=london,
    )
    job = (
        await stub.RecordFeedback(
            pb.RecordFeedbackRequest(name=first.name, rating=5, comment="Led to arrests"), metadata=sup
        )
    ).job
    assert job.feedback.rating == 5 and job.state == pb.JOB_STATE_DELIVERED
    assert [n.text for n in job.notes] == ["Two further numbers found"]

    listed = await stub.ListJobs(pb.ListJobsRequest(parent="regions/-"), metadata=london)
    assert first.name in [j.name for j in listed.jobs]

    def kinds_of(messages: list) -> list[str]:
        return [
            m.headers["ce-type"].rsplit(".", 1)[-1]
            for m in messages
            if m.headers.get("ce-subject") == first.name
        ]

    messages = await stream_messages(
        nats_server.url, "toex.emsou.tasking.>", until=lambda found: "FeedbackRecorded" in kinds_of(found)
    )
    kinds = kinds_of(messages)
    assert kinds == [
        "JobCreated",
        "JobAssigned",
        "JobStatusChanged",
        "JobReassigned",
        "JobStatusChanged",
        "JobStatusChanged",
        "FeedbackRequested",
        "FeedbackRecorded",
    ]


async def test_broker_outage_during_creation_loses_no_event(tasking, nats_server) -> None:
    stub = tasking.stub
    token = tasking.token(NC)
    operation = f"Op OUTAGE {uuid.uuid4().hex[:6]}"
    nats_server.stop()
    try:
        created = [
            (await stub.CreateJob(job_request(region, operation_name=operation), metadata=md(token))).job.name
            for region in ("EMSOU", "ERSOU", "LONDON")
        ]
        await asyncio.sleep(1.0)
        assert await pending(tasking.app.engine) == 3
    finally:
        nats_server.start()
    for _ in range(100):
        if await pending(tasking.app.engine) == 0:
            break
        await asyncio.sleep(0.2)
    assert await pending(tasking.app.engine) == 0

    def ours_in(messages: list) -> list[str]:
        return [n for n in (events_pb2.JobCreated.FromString(m.data).job for m in messages) if n in created]

    messages = await stream_messages(
        nats_server.url, "toex.*.tasking.JobCreated", until=lambda found: set(ours_in(found)) >= set(created)
    )
    ours = ours_in(messages)
    assert sorted(ours) == sorted(created)  # every one, exactly once


async def test_database_restart_is_survived(tasking, postgres) -> None:
    token = tasking.token(NC)
    await tasking.stub.CreateJob(job_request(), metadata=md(token))
    await asyncio.to_thread(postgres.restart)
    for attempt in range(20):
        try:
            job = (await tasking.stub.CreateJob(job_request(), metadata=md(token))).job
            break
        except grpc.aio.AioRpcError:
            if attempt == 19:
                raise
            await asyncio.sleep(0.5)
    assert job.state == pb.JOB_STATE_RAISED


async def test_overdue_job_raises_one_event(tasking, nats_server) -> None:
    request = job_request(region="ERSOU")
    request.job.due_time.CopyFrom(due(days=2 / 86400))  # two seconds
    created = (await tasking.stub.CreateJob(request, metadata=md(tasking.token(NC)))).job
    messages = []
    for _ in range(20):
        await asyncio.sleep(0.5)
        messages = [
            m
            for m in await stream_messages(nats_server.url, "toex.ersou.tasking.JobOverdue", wait=1)
            if m.headers.get("ce-subject") == created.name
        ]
        if messages:
            break
    await asyncio.sleep(1.5)  # several more scans
    messages = [
        m
        for m in await stream_messages(nats_server.url, "toex.ersou.tasking.JobOverdue", wait=1)
        if m.headers.get("ce-subject") == created.name
    ]
    assert len(messages) == 1
    read = await tasking.stub.GetJob(pb.GetJobRequest(name=created.name), metadata=md(tasking.token(NC)))
    assert read.job.overdue


async def test_audit_chain_detects_edit_and_deletion(tasking, postgres) -> None:
    token = tasking.token(NC)
    for _ in range(3):
        await tasking.stub.CreateJob(job_request(), metadata=md(token))
    assert (await verify(tasking.app.engine)).intact
    async with tasking.app.engine.begin() as conn:
        with pytest.raises(Exception, match="append-only"):
            async with conn.begin_nested():
                await conn.execute(text("UPDATE audit_log SET purpose = 'x' WHERE seq = 1"))
    # a superuser who disables the guard still cannot hide the change
    async with tasking.app.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_log DISABLE TRIGGER USER"))
        await conn.execute(text("UPDATE audit_log SET actor_username = 'someone.else' WHERE seq = 2"))
        await conn.execute(text("DELETE FROM audit_log WHERE seq = 1"))
        await conn.execute(text("ALTER TABLE audit_log ENABLE TRIGGER USER"))
    report = await verify(tasking.app.engine)
    assert not report.intact
    assert any("entry 2 was altered" in p for p in report.problems)
    assert any("missing" in p for p in report.problems)


async def test_auditors_read_their_regions_audit_log(tasking) -> None:
    from toex.audit.v1 import audit_pb2, audit_pb2_grpc

    emsou_job = (await tasking.stub.CreateJob(job_request("EMSOU"), metadata=md(tasking.token(NC)))).job
    await tasking.stub.GetJob(
        pb.GetJobRequest(name=emsou_job.name), metadata=md(tasking.token("researcher.emsou"))
    )
    ersou_job = (await tasking.stub.CreateJob(job_request("ERSOU"), metadata=md(tasking.token(NC)))).job
    audit_stub = audit_pb2_grpc.AuditServiceStub(tasking.channel)

    listed = await audit_stub.ListAuditRecords(
        audit_pb2.ListAuditRecordsRequest(page_size=500),
        metadata=md(tasking.token("auditor.emsou"), "audit review"),
    )
    resources = {r for record in listed.records for r in record.resources}
    actors = {record.actor.username for record in listed.records}
    assert emsou_job.name in resources and "researcher.emsou" in actors
    assert ersou_job.name not in resources  # another region's job, made by a national user

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await audit_stub.ListAuditRecords(
            audit_pb2.ListAuditRecordsRequest(), metadata=md(tasking.token("supervisor.emsou"))
        )
    assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED

    verified = await audit_stub.VerifyAuditLog(
        audit_pb2.VerifyAuditLogRequest(), metadata=md(tasking.token("auditor.emsou"))
    )
    assert verified.intact and verified.entries >= 4


async def test_notes_requested_by_safeguarding_land_once_and_are_audited(tasking, nats_server) -> None:
    from toex.safeguarding.events.v1 import events_pb2 as sg_events
    from toex_common.events import build_event
    from toex_kernel.regions import Region

    job = (await tasking.stub.CreateJob(job_request("EMSOU"), metadata=md(tasking.token(NC)))).job
    referral = f"regions/EMSOU/referrals/{uuid.uuid4().hex[:16]}"

    def requested(note_id: str, text: str):  # type: ignore[no-untyped-def]
        return build_event(
            sg_events.JobNoteRequested(referral=referral, job=job.name, note_id=note_id, text=text),
            domain="safeguarding",
            source="toex/safeguarding",
            region=Region.EMSOU,
            resource=referral,
        )

    first, second = uuid.uuid4().hex, uuid.uuid4().hex
    original = requested(first, "Safeguarding referral drafted.")
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        for event, msg_id in (
            (original, original.event_id),
            (original, f"again-{original.event_id}"),  # the same event delivered twice: the inbox
            (requested(first, "Safeguarding referral drafted."), None),  # published twice: the note id
            (requested(second, "Safeguarding referral approved."), None),
        ):
            headers = dict(event.headers, **({"Nats-Msg-Id": msg_id} if msg_id else {}))
            await js.publish(event.subject, event.payload, headers=headers)
    finally:
        await nc.close()

    async def noted() -> list[pb.JobNote]:
        got = await tasking.stub.GetJob(pb.GetJobRequest(name=job.name), metadata=md(tasking.token(NC)))
        return list(got.job.notes)

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(await noted()) < 2 and loop.time() < deadline:
        await asyncio.sleep(0.2)
    notes = await noted()
    # The last event was consumed after the repeats: each note is there once.
    assert [(n.name, n.author, n.text) for n in notes] == [
        (f"{job.name}/notes/{first}", "service-account-toex-safeguarding", "Safeguarding referral drafted."),
        (
            f"{job.name}/notes/{second}",
            "service-account-toex-safeguarding",
            "Safeguarding referral approved.",
        ),
    ]

    async def audited() -> list:  # type: ignore[type-arg]
        async with tasking.app.engine.connect() as conn:
            query = select(audit_table).where(audit_table.c.purpose == referral)
            return list((await conn.execute(query)).mappings().all())

    while len(await audited()) < 2 and loop.time() < deadline:  # written once each note is stored
        await asyncio.sleep(0.2)
    entries = await audited()
    assert sorted(tuple(e["resources"]) for e in entries) == sorted((job.name, note.name) for note in notes)
    assert {(e["actor_username"], e["actor_region"], e["outcome"]) for e in entries} == {
        ("service-account-toex-safeguarding", "EMSOU", "OK")
    }
    assert (await verify(tasking.app.engine)).intact
