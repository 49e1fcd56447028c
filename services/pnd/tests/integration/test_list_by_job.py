"""ListIntelligence with a job filter, against the real service: the region's researcher lists
one job's records (over pages, deleted ones when asked), nothing of another job or none; the
filter opens nothing: a researcher of another region is refused as without it, a job grant's
holder gets the granted job's records and nothing for another job's name; a malformed job is a
field error; and the listing is served by the job index (PostgreSQL's plan, a generic one as a
prepared statement gets)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from nats.aio.client import Client
from sqlalchemy import event, text
from toex.pnd.v1 import pnd_pb2 as pb
from toex.tasking.events.v2 import events_pb2 as ev
from toex_common.events.nats import connect

from .helpers import eventually, phone, submit
from .test_account_search import field_violations
from .test_grants import HOLDER, OWNER, STRANGER, access, consumer_ready, grant_is, publish_access

pytestmark = pytest.mark.integration


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, "test")
    yield client
    await client.close()


async def names(pnd: Any, username: str, purpose: str, **request: Any) -> list[str]:
    """Every page of the listing."""
    out: list[str] = []
    req = pb.ListIntelligenceRequest(**request)
    while True:
        page = await pnd.stub.ListIntelligence(req, metadata=pnd.md(username, purpose))
        out.extend(r.name for r in page.records)
        if not page.next_page_token:
            return out
        req.page_token = page.next_page_token


async def test_list_intelligence_of_one_job_and_the_filter_opens_nothing(pnd: Any, nc: Client) -> None:
    stub = pnd.stub
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    other_job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"

    async def made(number: str, purpose: str) -> str:
        return str(
            (
                await stub.SubmitIntelligence(submit(phone(number)), metadata=pnd.md(OWNER, purpose))
            ).record.name
        )

    first = await made("+447700900811", job)
    second = await made("+447700900812", job)
    elsewhere = await made("+447700900813", other_job)
    unlinked = await made("+447700900814", "Op SANDPIPER")

    # The region's researcher: the job's records, newest change first, over pages of one.
    assert await names(pnd, OWNER, job, parent="regions/EMSOU", job=job, page_size=1) == [second, first]
    assert await names(pnd, OWNER, job, parent="regions/-", job=job) == [second, first]
    assert await names(pnd, OWNER, other_job, parent="regions/EMSOU", job=other_job) == [elsewhere]
    everything = await names(pnd, OWNER, "Op SANDPIPER", parent="regions/EMSOU", page_size=500)
    assert {first, second, elsewhere, unlinked} <= set(everything)

    # Another region's researcher, holding nothing: refused as without the filter, and its own
    # region's listing for the job holds none of EMSOU's records.
    for request in (
        pb.ListIntelligenceRequest(parent="regions/EMSOU", job=job),
        pb.ListIntelligenceRequest(parent="regions/EMSOU"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ListIntelligence(request, metadata=pnd.md(STRANGER, job))
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert await names(pnd, STRANGER, job, parent="regions/ERSOU", job=job) == []
    assert await names(pnd, STRANGER, job, parent="regions/-", job=job) == []

    # A holder of the job's grant (London, under the job): the job's records; another job's
    # name gives nothing of it.
    assert await eventually(lambda: consumer_ready(pnd, nc)), "the grant consumer never started"
    await publish_access(nc, ev.JobAssigned(job=job, access=access(2, ev.JOB_STATE_ASSIGNED, HOLDER)))
    assert await eventually(lambda: grant_is(pnd, job, True)), "the grant never arrived"
    assert await names(pnd, HOLDER, job, parent="regions/EMSOU", job=job) == [second, first]
    assert await names(pnd, HOLDER, job, parent="regions/EMSOU", job=other_job) == []
    assert await names(pnd, HOLDER, job, parent="regions/EMSOU") == [second, first]


async def test_a_malformed_job_is_a_field_error(pnd: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await pnd.stub.ListIntelligence(
            pb.ListIntelligenceRequest(parent="regions/EMSOU", job="EMSOU/8f14e45f"), metadata=pnd.md(OWNER)
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "regions/{region}/jobs/{job}" in field_violations(refused.value)["job"]


async def test_the_job_listing_is_served_by_the_job_index(pnd: Any) -> None:
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    await pnd.stub.SubmitIntelligence(submit(phone("+447700900821")), metadata=pnd.md(OWNER, job))
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        # The listing's search (the service's background work reads the table too).
        if "FROM intelligence" in statement and "intelligence.job = " in statement:
            seen.append((statement, parameters))

    engine = pnd.app.engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        await names(pnd, OWNER, job, parent="regions/EMSOU", job=job, show_deleted=True)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert seen, "no listing by job reached the database"
    statement, parameters = seen[-1]
    async with pnd.app.engine.connect() as conn:
        # A generic plan (the job unknown when planned), as a reused prepared statement gets; no
        # sequential scan to fall back on, so the plan names the index it can use, or none.
        await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        await conn.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0] for row in (await conn.exec_driver_sql("EXPLAIN " + statement, parameters)).all()
        )
        await conn.rollback()
    assert "intelligence_job_updated" in plan, plan
