"""ListReferrals with a job filter, against the real service: the region's officer lists one
job's referrals (over pages), nothing of another job or none; the filter opens nothing: an
officer of another region is refused as without it, a job grant's holder gets the granted job's
referrals and nothing for another job's name; a malformed job is a field error; and the listing
is served by the job index (PostgreSQL's plan, a generic one as a prepared statement gets)."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from sqlalchemy import event, text
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.tasking.events.v2 import events_pb2 as ev

from .conftest import Running
from .test_job_grants import HOLDER, access, code_of, draft, grant_of, publish_access
from .test_safeguarding_service import eventually, md

pytestmark = pytest.mark.integration

OFFICER = "safeguarding_officer.emsou"
OTHER_REGION = HOLDER  # ERSOU's officer: holds nothing at first, then the job's grant


async def names(sg: Running, token: str, purpose: str, **request: Any) -> list[str]:
    """Every page of the listing."""
    out: list[str] = []
    req = pb.ListReferralsRequest(**request)
    while True:
        page = await sg.stub.ListReferrals(req, metadata=md(token, purpose))
        out.extend(r.name for r in page.referrals)
        if not page.next_page_token:
            return out
        req.page_token = page.next_page_token


async def test_list_referrals_of_one_job_and_the_filter_opens_nothing(
    safeguarding: Running, nats_server: Any
) -> None:
    sg = safeguarding
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}"
    other_job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}"
    first, second = await draft(sg, job), await draft(sg, job)
    elsewhere = await draft(sg, other_job)
    unlinked = await draft(sg, "")
    officer = sg.token(OFFICER)

    # The region's officer: the job's two referrals, newest first, over pages of one.
    assert await names(sg, officer, job, parent="regions/EMSOU", job=job, page_size=1) == [second, first]
    assert await names(sg, officer, job, parent="regions/-", job=job) == [second, first]
    assert await names(sg, officer, other_job, parent="regions/EMSOU", job=other_job) == [elsewhere]
    everything = await names(sg, officer, "Op SANDPIPER", parent="regions/EMSOU", page_size=500)
    assert {first, second, elsewhere, unlinked} <= set(everything)
    # A page token belongs to its query: reused without the filter, it is refused.
    page = await sg.stub.ListReferrals(
        pb.ListReferralsRequest(parent="regions/EMSOU", job=job, page_size=1), metadata=md(officer, job)
    )
    assert page.next_page_token
    assert (
        await code_of(
            sg.stub.ListReferrals(
                pb.ListReferralsRequest(parent="regions/EMSOU", page_size=1, page_token=page.next_page_token),
                metadata=md(officer, job),
            )
        )
        is grpc.StatusCode.INVALID_ARGUMENT
    )

    # Another region's officer, holding nothing: refused as without the filter, and its own
    # region's listing for the job holds none of EMSOU's referrals.
    stranger = sg.token(OTHER_REGION)
    for request in (
        pb.ListReferralsRequest(parent="regions/EMSOU", job=job),
        pb.ListReferralsRequest(parent="regions/EMSOU"),
    ):
        assert (
            await code_of(sg.stub.ListReferrals(request, metadata=md(stranger, job)))
            is grpc.StatusCode.PERMISSION_DENIED
        )
    assert await names(sg, stranger, job, parent="regions/ERSOU", job=job) == []
    assert await names(sg, stranger, job, parent="regions/-", job=job) == []

    # A holder of the job's grant (ERSOU's officer, under the job): the job's referrals; another
    # job's name gives nothing of it.
    await publish_access(nats_server.url, ev.JobCreated(job=job, access=access(1, ev.JOB_STATE_RAISED)))
    await publish_access(
        nats_server.url, ev.JobAssigned(job=job, access=access(2, ev.JOB_STATE_ASSIGNED, HOLDER))
    )

    async def granted() -> bool:
        found = await grant_of(sg, job)
        return found is not None and found.open and HOLDER in found.holders

    await eventually(granted, what="the job's grant in the service's read model")
    holder = sg.token(HOLDER)
    assert await names(sg, holder, job, parent="regions/EMSOU", job=job) == [second, first]
    assert await names(sg, holder, job, parent="regions/EMSOU", job=other_job) == []
    assert await names(sg, holder, job, parent="regions/EMSOU") == [second, first]


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    status = rpc_status.from_call(error)
    assert status is not None
    found: dict[str, str] = {}
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found |= {v.field: v.description for v in bad.field_violations}
    return found


async def test_a_malformed_job_is_a_field_error(safeguarding: Running) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await safeguarding.stub.ListReferrals(
            pb.ListReferralsRequest(parent="regions/EMSOU", job="jobs/8f14e45f"),
            metadata=md(safeguarding.token(OFFICER)),
        )
    assert refused.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "regions/{region}/jobs/{job}" in _violations(refused.value)["job"]


async def test_the_job_listing_is_served_by_the_job_index(safeguarding: Running) -> None:
    sg = safeguarding
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:16]}"
    await draft(sg, job)
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        # The listing's search (the service's background scans read the table too).
        if "FROM referrals" in statement and "referrals.linked_job = " in statement:
            seen.append((statement, parameters))

    engine = sg.app.engine.sync_engine
    event.listen(engine, "before_cursor_execute", capture)
    try:
        await names(sg, sg.token(OFFICER), job, parent="regions/EMSOU", job=job)
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    assert seen, "no listing by job reached the database"
    statement, parameters = seen[-1]
    async with sg.app.engine.connect() as conn:
        # A generic plan (the job unknown when planned), as a reused prepared statement gets; no
        # sequential scan to fall back on, so the plan names the index it can use, or none.
        await conn.execute(text("SET plan_cache_mode = force_generic_plan"))
        await conn.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0] for row in (await conn.exec_driver_sql("EXPLAIN " + statement, parameters)).all()
        )
        await conn.rollback()
    assert "referrals_job_created" in plan, plan
