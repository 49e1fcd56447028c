"""Tasking the way the national team does it, against the real service (PostgreSQL, nats-server,
Keycloak and its directory): UpdateJob and JobUpdated, collaborating regions, and the national
coordinator assigning any region's researcher."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select
from toex.tasking.events.v2 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import region_pb2
from toex_common.db import audit_table
from toex_common.testing.streams import stream_messages

from .test_tasking_service import NC, due, job_request, md

pytestmark = pytest.mark.integration


async def refused(call, request, token: str) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(request, metadata=md(token))
    return caught.value


def violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None
    details = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(details)
    return [(v.field, v.description) for v in details.field_violations]


def update_request(
    name: str, paths: list[str], request_id: str = "", **fields: object
) -> pb.UpdateJobRequest:
    return pb.UpdateJobRequest(
        job=pb.Job(name=name, **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=paths),
        request_id=request_id,
    )


async def events_about(nats_url: str, job: str, kind: str, count: int = 1, wait: float = 10.0) -> list:  # type: ignore[type-arg]
    def ours(messages: list) -> list:  # type: ignore[type-arg]
        return [m for m in messages if m.headers.get("ce-subject") == job]

    messages = await stream_messages(
        nats_url, f"toex.emsou.tasking.{kind}", until=lambda found: len(ours(found)) >= count, wait=wait
    )
    return ours(messages)


async def test_update_job_collaborating_regions_and_job_updated(tasking, nats_server) -> None:
    stub = tasking.stub
    sup_emsou, sup_ersou, sup_rocuwm = (
        tasking.token(f"supervisor.{r}") for r in ("emsou", "ersou", "rocuwm")
    )
    request = job_request("EMSOU")
    request.job.collaborating_regions.append(region_pb2.REGION_ERSOU)
    job = (await stub.CreateJob(request, metadata=md(tasking.token(NC)))).job
    assert list(job.collaborating_regions) == [region_pb2.REGION_ERSOU]

    # The collaborating region's supervisor sees the job, in GetJob and ListJobs...
    seen = (await stub.GetJob(pb.GetJobRequest(name=job.name), metadata=md(sup_ersou))).job
    assert seen.name == job.name
    for parent in ("regions/-", "regions/EMSOU"):
        listed = await stub.ListJobs(pb.ListJobsRequest(parent=parent, page_size=500), metadata=md(sup_ersou))
        assert job.name in [j.name for j in listed.jobs]
        assert {j.owning_region for j in listed.jobs} <= {region_pb2.REGION_EMSOU, region_pb2.REGION_ERSOU}
    own = await stub.ListJobs(
        pb.ListJobsRequest(parent="regions/ERSOU", page_size=500), metadata=md(sup_ersou)
    )
    assert job.name not in [j.name for j in own.jobs]
    # ...and changes nothing.
    denied = await refused(
        stub.UpdateJob, update_request(job.name, ["description"], description="x"), sup_ersou
    )
    assert denied.code() is grpc.StatusCode.PERMISSION_DENIED
    denied_note = await refused(stub.AddJobNote, pb.AddJobNoteRequest(parent=job.name, text="x"), sup_ersou)
    assert denied_note.code() is grpc.StatusCode.PERMISSION_DENIED

    # A region that does not collaborate: the job is missing, exactly as a job that does not exist.
    hidden = await refused(stub.GetJob, pb.GetJobRequest(name=job.name), sup_rocuwm)
    missing = await refused(stub.GetJob, pb.GetJobRequest(name="regions/EMSOU/jobs/doesnotexist"), sup_rocuwm)
    assert hidden.code() is missing.code() is grpc.StatusCode.NOT_FOUND
    assert hidden.details().replace(job.name, "X") == missing.details().replace(  # type: ignore[union-attr]
        "regions/EMSOU/jobs/doesnotexist", "X"
    )
    listed = await stub.ListJobs(pb.ListJobsRequest(parent="regions/EMSOU"), metadata=md(sup_rocuwm))
    assert job.name not in [j.name for j in listed.jobs]
    hidden_update = await refused(stub.UpdateJob, update_request(job.name, ["description"]), sup_rocuwm)
    assert hidden_update.code() is grpc.StatusCode.NOT_FOUND

    # The mask: required, and only the updatable fields.
    empty = await refused(stub.UpdateJob, update_request(job.name, []), sup_emsou)
    assert empty.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [f for f, _ in violations(empty)] == ["update_mask"]
    state = await refused(
        stub.UpdateJob, update_request(job.name, ["priority", "state"], priority=2), sup_emsou
    )
    assert state.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert [(f, d.split(" ")[0]) for f, d in violations(state)] == [("update_mask", "state")]
    researcher = await refused(
        stub.UpdateJob, update_request(job.name, ["description"]), tasking.token("researcher.emsou")
    )
    assert researcher.code() is grpc.StatusCode.PERMISSION_DENIED

    # The owning region's supervisor changes it; a repeat with the request id is answered once.
    new_due = due(days=9)
    change = update_request(
        job.name,
        ["due_time", "priority", "collaborating_regions", "subject_entity_ids"],
        request_id=str(uuid.uuid4()),
        due_time=new_due,
        priority=pb.PRIORITY_ROUTINE,
        collaborating_regions=[region_pb2.REGION_ROCUWM],
        subject_entity_ids=["ent-1", "ent-2"],
        description="not in the mask",
    )
    updated = (await stub.UpdateJob(change, metadata=md(sup_emsou))).job
    again = (await stub.UpdateJob(change, metadata=md(sup_emsou))).job
    assert again == updated
    assert updated.due_time == new_due and updated.priority == pb.PRIORITY_ROUTINE
    assert list(updated.collaborating_regions) == [region_pb2.REGION_ROCUWM]
    assert list(updated.subject_entity_ids) == ["ent-1", "ent-2"]
    assert updated.description == job.description
    stored = (await stub.GetJob(pb.GetJobRequest(name=job.name), metadata=md(tasking.token(NC)))).job
    assert stored == updated

    # The view moved with the collaboration.
    gone = await refused(stub.GetJob, pb.GetJobRequest(name=job.name), sup_ersou)
    assert gone.code() is grpc.StatusCode.NOT_FOUND
    assert (await stub.GetJob(pb.GetJobRequest(name=job.name), metadata=md(sup_rocuwm))).job.name == job.name

    [created_message] = await events_about(nats_server.url, job.name, "JobCreated")
    created = events_pb2.JobCreated.FromString(created_message.data)
    assert list(created.access.collaborating_regions) == [region_pb2.REGION_ERSOU]
    await asyncio.sleep(1.0)  # a repeated request would have published by now
    [message] = await events_about(nats_server.url, job.name, "JobUpdated")
    assert message.headers["ce-type"] == "toex.tasking.events.v2.JobUpdated"
    assert message.headers["toex-region"] == "EMSOU"
    event = events_pb2.JobUpdated.FromString(message.data)
    assert message.headers["Nats-Msg-Id"] == event.event_id
    assert event.job == job.name and event.updated_by == "supervisor.emsou"
    assert list(event.changed_fields) == [
        "due_time",
        "priority",
        "subject_entity_ids",
        "collaborating_regions",
    ]
    assert event.access.revision == created.access.revision + 1
    assert list(event.access.collaborating_regions) == [region_pb2.REGION_ROCUWM]
    assert event.label.region == region_pb2.REGION_EMSOU

    async with tasking.app.engine.connect() as conn:
        rows = (
            (await conn.execute(select(audit_table).where(audit_table.c.resources.contains([job.name]))))
            .mappings()
            .all()
        )
    outcomes = {(r["actor_username"], r["action"].rsplit("/", 1)[-1], r["outcome"]) for r in rows}
    assert ("supervisor.emsou", "UpdateJob", "OK") in outcomes
    assert ("supervisor.ersou", "UpdateJob", "PERMISSION_DENIED") in outcomes
    assert ("supervisor.rocuwm", "GetJob", "DENIED_OUT_OF_SCOPE") in outcomes


async def test_coordinator_assigns_any_regions_researcher_a_supervisor_does_not(tasking, nats_server) -> None:
    stub = tasking.stub
    job = (await stub.CreateJob(job_request("EMSOU"), metadata=md(tasking.token(NC)))).job
    sup = tasking.token("supervisor.emsou")
    by_supervisor = await refused(
        stub.AssignJob, pb.AssignJobRequest(name=job.name, assignees=["researcher.london"]), sup
    )
    assert by_supervisor.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "LONDON" not in (by_supervisor.details() or "")

    assigned = (
        await stub.AssignJob(
            pb.AssignJobRequest(name=job.name, assignees=["researcher.london"]),
            metadata=md(tasking.token(NC)),
        )
    ).job
    assert assigned.state == pb.JOB_STATE_ASSIGNED
    assert [(a.username, a.region) for a in assigned.assignees] == [
        ("researcher.london", region_pb2.REGION_LONDON)
    ]
    # The London researcher works the EMSOU job with no detour through EMSOU.
    london = md(tasking.token("researcher.london"))
    assert (await stub.GetJob(pb.GetJobRequest(name=job.name), metadata=london)).job.name == job.name
    await stub.UpdateJobStatus(
        pb.UpdateJobStatusRequest(name=job.name, state=pb.JOB_STATE_IN_PROGRESS), metadata=london
    )
    # Still researchers only, from the directory.
    analyst = await refused(
        stub.AssignJob, pb.AssignJobRequest(name=job.name, assignees=["analyst.ersou"]), tasking.token(NC)
    )
    assert analyst.code() is grpc.StatusCode.INVALID_ARGUMENT

    [message] = await events_about(nats_server.url, job.name, "JobAssigned")
    event = events_pb2.JobAssigned.FromString(message.data)
    assert [(a.username, a.region) for a in event.access.assignees] == [
        ("researcher.london", region_pb2.REGION_LONDON)
    ]
    assert event.assigned_by == NC


async def test_a_new_due_time_re_arms_the_overdue_notice(tasking, nats_server) -> None:
    request = job_request("EMSOU")
    request.job.due_time.CopyFrom(due(days=2 / 86400))  # two seconds
    token = tasking.token(NC)
    job = (await tasking.stub.CreateJob(request, metadata=md(token))).job
    [first] = await events_about(nats_server.url, job.name, "JobOverdue", wait=15)

    new_due = Timestamp()
    new_due.FromDatetime(datetime.now(UTC) + timedelta(seconds=3))
    await tasking.stub.UpdateJob(update_request(job.name, ["due_time"], due_time=new_due), metadata=md(token))
    read = (await tasking.stub.GetJob(pb.GetJobRequest(name=job.name), metadata=md(token))).job
    assert not read.overdue
    notices = await events_about(nats_server.url, job.name, "JobOverdue", count=2, wait=15)
    await asyncio.sleep(1.5)  # several more scans: still one notice per due time
    notices = await events_about(nats_server.url, job.name, "JobOverdue", count=3, wait=1)
    due_times = [events_pb2.JobOverdue.FromString(m.data).due_time for m in notices]
    assert due_times == [events_pb2.JobOverdue.FromString(first.data).due_time, new_due]
