"""Requesting force and threat category on jobs, and the requesting officer's feedback by
one-time token, against real PostgreSQL, nats-server and Keycloak."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import select, text
from toex.tasking.events.v2 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import force_pb2, threat_pb2
from toex_common.db import audit_table
from toex_common.testing.streams import stream_messages

pytestmark = pytest.mark.integration

SUP = "supervisor.emsou"
RES = "researcher.emsou"


def md(token: str, purpose: str = "Op LARCH") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), ("x-toex-purpose", purpose)]


def due(days: float = 5) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(datetime.now(UTC) + timedelta(days=days))
    return stamp


def new_job(**fields: object) -> pb.CreateJobRequest:
    job = pb.Job(
        requesting_unit="Nottinghamshire Police, Public Protection Unit",
        requesting_officer="DS Hall 1234",
        operation_name=f"Op {uuid.uuid4().hex[:6].upper()}",
        job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
        priority=pb.PRIORITY_PRIORITY,
        due_time=due(),
        requesting_force=force_pb2.FORCE_NOTTINGHAMSHIRE,
        threat_category=threat_pb2.THREAT_CATEGORY_CCE_COUNTY_LINES,
    )
    for key, value in fields.items():
        setattr(job, key, value)
    return pb.CreateJobRequest(parent="regions/EMSOU", job=job)


def reason_of(error: grpc.aio.AioRpcError) -> str:
    status = rpc_status.from_call(error)
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason
    return ""


def field_violations(error: grpc.aio.AioRpcError) -> set[str]:
    status = rpc_status.from_call(error)
    assert status is not None
    found = set()
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found |= {v.field for v in bad.field_violations}
    return found


async def deliver(tasking, **fields: object) -> tuple[str, pb.UpdateJobStatusResponse]:
    stub, sup, res = tasking.stub, md(tasking.token(SUP)), md(tasking.token(RES))
    name = (await stub.CreateJob(new_job(**fields), metadata=sup)).job.name
    await stub.AssignJob(pb.AssignJobRequest(name=name, assignees=[RES]), metadata=sup)
    await stub.UpdateJobStatus(
        pb.UpdateJobStatusRequest(name=name, state=pb.JOB_STATE_IN_PROGRESS), metadata=res
    )
    delivered = await stub.UpdateJobStatus(
        pb.UpdateJobStatusRequest(name=name, state=pb.JOB_STATE_DELIVERED, product="Network chart"),
        metadata=res,
    )
    return name, delivered


async def test_force_and_threat_are_set_validated_updated_filtered_and_published(
    tasking, nats_server
) -> None:
    stub, sup = tasking.stub, md(tasking.token(SUP))
    created = (await stub.CreateJob(new_job(), metadata=sup)).job
    assert created.requesting_force == force_pb2.FORCE_NOTTINGHAMSHIRE
    assert created.threat_category == threat_pb2.THREAT_CATEGORY_CCE_COUNTY_LINES
    assert created.requesting_unit == "Nottinghamshire Police, Public Protection Unit"
    read = (await stub.GetJob(pb.GetJobRequest(name=created.name), metadata=sup)).job
    assert (read.requesting_force, read.threat_category) == (
        created.requesting_force,
        created.threat_category,
    )

    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await stub.CreateJob(new_job(requesting_force=97, threat_category=98), metadata=sup)
    assert unknown.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(unknown.value) == {"job.requesting_force", "job.threat_category"}

    updated = (
        await stub.UpdateJob(
            pb.UpdateJobRequest(
                job=pb.Job(
                    name=created.name,
                    requesting_force=force_pb2.FORCE_DERBYSHIRE,
                    threat_category=threat_pb2.THREAT_CATEGORY_CSE,
                ),
                update_mask=field_mask_pb2.FieldMask(paths=["requesting_force", "threat_category"]),
            ),
            metadata=sup,
        )
    ).job
    assert updated.requesting_force == force_pb2.FORCE_DERBYSHIRE
    assert updated.threat_category == threat_pb2.THREAT_CATEGORY_CSE

    listed = await stub.ListJobs(
        pb.ListJobsRequest(
            parent="regions/EMSOU",
            requesting_force=force_pb2.FORCE_DERBYSHIRE,
            threat_category=threat_pb2.THREAT_CATEGORY_CSE,
            page_size=500,
        ),
        metadata=sup,
    )
    names = [j.name for j in listed.jobs]
    assert created.name in names
    assert all(j.requesting_force == force_pb2.FORCE_DERBYSHIRE for j in listed.jobs)
    other = await stub.ListJobs(
        pb.ListJobsRequest(
            parent="regions/EMSOU", requesting_force=force_pb2.FORCE_NOTTINGHAMSHIRE, page_size=500
        ),
        metadata=sup,
    )
    assert created.name not in [j.name for j in other.jobs]

    def about(messages: list) -> list:
        return [m for m in messages if m.headers.get("ce-subject") == created.name]

    messages = await stream_messages(
        nats_server.url,
        "toex.emsou.tasking.>",
        until=lambda found: any(m.subject.endswith("JobUpdated") for m in about(found)),
    )
    by_kind = {m.subject.rsplit(".", 1)[-1]: m for m in about(messages)}
    job_created = events_pb2.JobCreated.FromString(by_kind["JobCreated"].data)
    assert job_created.requesting_force == force_pb2.FORCE_NOTTINGHAMSHIRE
    job_updated = events_pb2.JobUpdated.FromString(by_kind["JobUpdated"].data)
    assert list(job_updated.changed_fields) == ["requesting_force", "threat_category"]
    assert job_updated.threat_category == threat_pb2.THREAT_CATEGORY_CSE


async def test_the_officer_records_feedback_with_the_token_once_and_without_an_account(
    tasking, nats_server
) -> None:
    stub, sup = tasking.stub, md(tasking.token(SUP))
    name, delivered = await deliver(tasking)
    token = delivered.feedback_token
    assert token and delivered.job.state == pb.JOB_STATE_DELIVERED
    assert delivered.feedback_token_expire_time.ToDatetime(UTC) > datetime.now(UTC) + timedelta(days=29)

    # The event a notifier sends on carries the same token and the officer as recorded.
    messages = await stream_messages(
        nats_server.url,
        "toex.emsou.tasking.FeedbackRequested",
        until=lambda found: any(m.headers.get("ce-subject") == name for m in found),
    )
    [requested] = [
        events_pb2.FeedbackRequested.FromString(m.data)
        for m in messages
        if m.headers.get("ce-subject") == name
    ]
    assert requested.token == token and requested.requesting_officer == "DS Hall 1234"

    # Only the hash is stored.
    job_id = name.rsplit("/", 1)[-1]
    async with tasking.app.engine.connect() as conn:
        stored = (
            await conn.execute(text("SELECT feedback_token_hash FROM jobs WHERE id = :id"), {"id": job_id})
        ).scalar_one()
    assert stored and token not in stored and len(stored) == 64

    # No bearer token: the one-time token is the credential.
    answer = await stub.RecordFeedback(
        pb.RecordFeedbackRequest(
            name=name, token=token, rating=4, comment="Found the controller", officer_name="DS Hall"
        )
    )
    assert answer.name == name
    assert not answer.HasField("job")  # the officer may not read the job

    with pytest.raises(grpc.aio.AioRpcError) as used:
        await stub.RecordFeedback(pb.RecordFeedbackRequest(name=name, token=token, rating=1, comment="again"))
    assert used.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(used.value) == "FEEDBACK_TOKEN_USED"

    # Those who may see the job see the feedback.
    job = (await stub.GetJob(pb.GetJobRequest(name=name), metadata=sup)).job
    assert (job.feedback.rating, job.feedback.comment, job.feedback.officer_name) == (
        4,
        "Found the controller",
        "DS Hall",
    )

    # Audited: the anonymous call, its job and outcome; the refused repeat too.
    async with tasking.app.engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    select(audit_table).where(
                        audit_table.c.action == "/toex.tasking.v1.TaskingService/RecordFeedback"
                    )
                )
            )
            .mappings()
            .all()
        )
    ours = [(r["actor_username"], r["outcome"]) for r in rows if name in r["resources"]]
    assert ("(one-time token)", "OK") in ours
    assert ("(one-time token)", "PERMISSION_DENIED") in ours

    recorded = await stream_messages(
        nats_server.url,
        "toex.emsou.tasking.FeedbackRecorded",
        until=lambda found: any(m.headers.get("ce-subject") == name for m in found),
    )
    [event] = [
        events_pb2.FeedbackRecorded.FromString(m.data)
        for m in recorded
        if m.headers.get("ce-subject") == name
    ]
    assert event.rating == 4 and event.has_comment


async def test_another_jobs_token_a_wrong_one_and_none_are_refused(tasking) -> None:
    stub, sup = tasking.stub, md(tasking.token(SUP))
    first, _ = await deliver(tasking)
    second, second_delivery = await deliver(tasking)
    for name, token in ((first, second_delivery.feedback_token), (first, "not-a-token")):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RecordFeedback(pb.RecordFeedbackRequest(name=name, token=token, rating=5))
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert reason_of(refused.value) == "FEEDBACK_TOKEN_INVALID"
    job = (await stub.GetJob(pb.GetJobRequest(name=first), metadata=sup)).job
    assert not job.HasField("feedback")
    # The other job's token still works on its own job.
    await stub.RecordFeedback(
        pb.RecordFeedbackRequest(name=second, token=second_delivery.feedback_token, rating=3)
    )

    # Without a bearer token no other method is open, and RecordFeedback needs its token.
    with pytest.raises(grpc.aio.AioRpcError) as anonymous_read:
        await stub.GetJob(pb.GetJobRequest(name=first))
    assert anonymous_read.value.code() is grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as no_token:
        await stub.RecordFeedback(pb.RecordFeedbackRequest(name=first, rating=5))
    assert no_token.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "token" in field_violations(no_token.value)


async def test_an_expired_token_is_refused(tasking) -> None:
    stub, sup = tasking.stub, md(tasking.token(SUP))
    name, delivered = await deliver(tasking)
    job_id = name.rsplit("/", 1)[-1]
    async with tasking.app.engine.begin() as conn:
        await conn.execute(
            text("UPDATE jobs SET feedback_token_expires_at = now() - interval '1 second' WHERE id = :id"),
            {"id": job_id},
        )
    with pytest.raises(grpc.aio.AioRpcError) as expired:
        await stub.RecordFeedback(
            pb.RecordFeedbackRequest(name=name, token=delivered.feedback_token, rating=5)
        )
    assert expired.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert reason_of(expired.value) == "FEEDBACK_TOKEN_EXPIRED"
    job = (await stub.GetJob(pb.GetJobRequest(name=name), metadata=sup)).job
    assert not job.HasField("feedback")
