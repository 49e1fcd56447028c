"""Work under a job grant against the real service: tasking's v2 events published to NATS give a
London researcher an EMSOU job; London submits, reads, lists and searches that job's
intelligence in EMSOU under the job, and reaches nothing else of EMSOU; closing the job ends it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from nats.aio.client import Client
from sqlalchemy import select
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import sync_pb2
from toex.tasking.events.v2 import events_pb2 as ev
from toex_common.db import audit_table
from toex_common.events import build_event
from toex_common.events.nats import connect
from toex_common.grants import job_grants_table
from toex_kernel.regions import Region

from .helpers import eventually, phone, submit, update

pytestmark = pytest.mark.integration

OWNER, HOLDER, STRANGER = "researcher.emsou", "researcher.london", "researcher.ersou"


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, "test")
    yield client
    await client.close()


async def publish_access(nc: Client, message: Any) -> None:
    """As tasking publishes who may work a job: on the job region's subject."""
    envelope = build_event(message, domain="tasking", source="test", region=Region.EMSOU)
    await nc.jetstream().publish(envelope.subject, envelope.payload, headers=dict(envelope.headers))


def access(revision: int, state: int, *holders: str) -> ev.JobAccess:
    return ev.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[ev.Assignee(username=h) for h in holders],
    )


async def consumer_ready(pnd: Any, nc: Client) -> bool:
    """The service's grant consumer is bound to tasking's stream (it sets up in the background)."""
    [consumer] = [c for c in pnd.app.consumers if c.name == "pnd-job-grants"]
    try:
        await nc.jetstream().consumer_info("TASKING", consumer.name)
    except Exception:
        return False
    return True


async def grant_is(pnd: Any, job: str, open_: bool) -> bool:
    async with pnd.app.engine.connect() as conn:
        row = (
            await conn.execute(select(job_grants_table.c.open).where(job_grants_table.c.job == job))
        ).first()
    return row is not None and row.open is open_


def not_found(error: pytest.ExceptionInfo[grpc.aio.AioRpcError]) -> bool:
    return error.value.code() is grpc.StatusCode.NOT_FOUND


async def test_a_job_grant_reaches_the_jobs_intelligence_and_nothing_else_until_the_job_closes(
    pnd: Any, nc: Client
) -> None:
    stub = pnd.stub
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    assert await eventually(lambda: consumer_ready(pnd, nc)), "the grant consumer never started"

    await publish_access(nc, ev.JobAssigned(job=job, access=access(2, ev.JOB_STATE_ASSIGNED, HOLDER)))
    assert await eventually(lambda: grant_is(pnd, job, True)), "the grant never arrived"

    # EMSOU's own researcher records one thing for the job and one for something else.
    for_job = (
        await stub.SubmitIntelligence(submit(phone("+447700900701")), metadata=pnd.md(OWNER, job))
    ).record
    elsewhere = (await stub.SubmitIntelligence(submit(phone("+447700900702")), metadata=pnd.md(OWNER))).record

    # London, under the job: submits in EMSOU (stored and queued there), reads, lists, searches.
    made = (
        await stub.SubmitIntelligence(submit(phone("+447700900703")), metadata=pnd.md(HOLDER, job))
    ).record
    assert made.name.startswith("regions/EMSOU/intelligence/") and made.created_by == HOLDER
    assert made.job == for_job.job == job and elsewhere.job == ""
    read = (
        await stub.GetIntelligence(pb.GetIntelligenceRequest(name=for_job.name), metadata=pnd.md(HOLDER, job))
    ).record
    assert read.entity.phone.e164 == "+447700900701"
    listed = (
        await stub.ListIntelligence(
            pb.ListIntelligenceRequest(parent="regions/EMSOU"), metadata=pnd.md(HOLDER, job)
        )
    ).records
    assert {r.name for r in listed} == {for_job.name, made.name}
    history = (
        await stub.ListSubmissions(pb.ListSubmissionsRequest(parent=made.name), metadata=pnd.md(HOLDER, job))
    ).submissions
    assert [s.record_version for s in history] == [1]
    searched = await stub.SearchPnd(
        pb.SearchPndRequest(
            parent="regions/EMSOU",
            search=sync_pb2.PndSearch(kind=sync_pb2.PND_SEARCH_KIND_PHONE, phone_e164="+447700900701"),
        ),
        metadata=pnd.md(HOLDER, job),
    )
    assert searched.search.name.startswith("regions/EMSOU/pndSearches/") and searched.search.job == job

    # Nothing else of EMSOU: its other record, under the job or not; nor a withdrawal.
    for purpose in (job, "Op SANDPIPER"):
        with pytest.raises(grpc.aio.AioRpcError) as other:
            await stub.GetIntelligence(
                pb.GetIntelligenceRequest(name=elsewhere.name), metadata=pnd.md(HOLDER, purpose)
            )
        assert not_found(other)
    with pytest.raises(grpc.aio.AioRpcError) as changed:
        await stub.UpdateIntelligence(
            update(elsewhere.name, phone("+447700900704")), metadata=pnd.md(HOLDER, job)
        )
    assert not_found(changed)
    # The job's own record, without the job as the purpose: not found.
    with pytest.raises(grpc.aio.AioRpcError) as no_job:
        await stub.GetIntelligence(
            pb.GetIntelligenceRequest(name=for_job.name), metadata=pnd.md(HOLDER, "Op SANDPIPER")
        )
    assert not_found(no_job)
    with pytest.raises(grpc.aio.AioRpcError) as withdraw:
        await stub.DeleteIntelligence(
            pb.DeleteIntelligenceRequest(name=made.name), metadata=pnd.md(HOLDER, job)
        )
    assert withdraw.value.code() is grpc.StatusCode.PERMISSION_DENIED
    # Someone not assigned: not found, whatever purpose they state.
    with pytest.raises(grpc.aio.AioRpcError) as stranger:
        await stub.GetIntelligence(
            pb.GetIntelligenceRequest(name=for_job.name), metadata=pnd.md(STRANGER, job)
        )
    assert not_found(stranger)

    # The job closes (a later revision): the same read is not found.
    await publish_access(nc, ev.JobStatusChanged(job=job, access=access(3, ev.JOB_STATE_CLOSED, HOLDER)))
    assert await eventually(lambda: grant_is(pnd, job, False)), "the job never closed"
    with pytest.raises(grpc.aio.AioRpcError) as closed:
        await stub.GetIntelligence(pb.GetIntelligenceRequest(name=for_job.name), metadata=pnd.md(HOLDER, job))
    assert not_found(closed)
    with pytest.raises(grpc.aio.AioRpcError) as late:
        await stub.SubmitIntelligence(submit(phone("+447700900705")), metadata=pnd.md(HOLDER, job))
    assert late.value.code() is grpc.StatusCode.PERMISSION_DENIED

    async with pnd.app.engine.connect() as conn:
        rows = (
            (
                await conn.execute(
                    select(audit_table).where(audit_table.c.actor_username.in_([HOLDER, STRANGER]))
                )
            )
            .mappings()
            .all()
        )
    audited = {
        (r["actor_username"], r["action"].rsplit("/", 1)[-1], r["purpose"], r["outcome"]) for r in rows
    }
    for method in (
        "SubmitIntelligence",
        "GetIntelligence",
        "ListIntelligence",
        "ListSubmissions",
        "SearchPnd",
    ):
        assert (HOLDER, method, job, "OK") in audited, method
    assert (HOLDER, "GetIntelligence", job, "DENIED_OUT_OF_SCOPE") in audited
    assert (STRANGER, "GetIntelligence", job, "DENIED_OUT_OF_SCOPE") in audited
