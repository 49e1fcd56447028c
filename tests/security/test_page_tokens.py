"""Finding 12: a forged page token answers INVALID_ARGUMENT, never INTERNAL.

Page tokens are opaque but not signed: anyone can decode one, change its cursor and send it
back. The attack takes a genuine token (so its query fingerprint matches) and replaces the
cursor with something the service never issued."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from toex.entity.v1 import entity_pb2 as epb
from toex.tasking.v1 import tasking_pb2 as tpb
from toex.type.v1 import paging_pb2, security_pb2

NC = "national_coordinator.national"


def forged(token: str, sort_key: str) -> str:
    cursor = paging_pb2.PageCursor.FromString(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    cursor.last_sort_key = sort_key
    return base64.urlsafe_b64encode(cursor.SerializeToString()).decode().rstrip("=")


async def refused(call, request, metadata) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as error:
        await call(request, metadata=metadata)
    assert "page_token" in (error.value.details() or "") or error.value.code() != grpc.StatusCode.INTERNAL
    return error.value.code()


async def test_forged_offset_token(entity) -> None:
    surname = f"Page{uuid.uuid4().hex[:8]}"
    for given in ("Ann", "Anne"):
        record = epb.SourceRecord(
            ref=epb.SourceRecordRef(source_system="niche", source_record_id=uuid.uuid4().hex),
            grading=epb.Grading(
                source_evaluation=epb.SOURCE_EVALUATION_2,
                intelligence_assessment=epb.INTELLIGENCE_ASSESSMENT_B,
                handling=security_pb2.HANDLING_CODE_P,
            ),
            person=epb.Person(
                given_name=given, surname=surname, birth_date=f"19{len(given)}0-01-1{len(given)}"
            ),
        )
        await entity.stub.ResolveRecord(
            epb.ResolveRecordRequest(parent="regions/EMSOU", record=record), metadata=entity.md(NC)
        )
    request = epb.SearchEntitiesRequest(name=f"Ann {surname}", page_size=1)
    first = await entity.stub.SearchEntities(request, metadata=entity.md(NC))
    assert first.next_page_token
    for sort_key in ("lots", "-1", "99999999999999999999"):
        request.page_token = forged(first.next_page_token, sort_key)
        assert (
            await refused(entity.stub.SearchEntities, request, entity.md(NC))
            == grpc.StatusCode.INVALID_ARGUMENT
        )


async def test_forged_time_token(tasking) -> None:
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    for _ in range(2):
        await tasking.stub.CreateJob(
            tpb.CreateJobRequest(
                parent="regions/EMSOU",
                job=tpb.Job(
                    requesting_unit="Derbyshire Constabulary",
                    operation_name="Op PAGER",
                    job_type=tpb.JOB_TYPE_COMMS_ANALYSIS,
                    due_time=due,
                ),
            ),
            metadata=tasking.md(NC),
        )
    request = tpb.ListJobsRequest(parent="regions/EMSOU", page_size=1)
    first = await tasking.stub.ListJobs(request, metadata=tasking.md(NC))
    assert first.next_page_token
    for sort_key in ("yesterday", "2026-13-45T99:00:00+00:00"):
        request.page_token = forged(first.next_page_token, sort_key)
        assert (
            await refused(tasking.stub.ListJobs, request, tasking.md(NC)) == grpc.StatusCode.INVALID_ARGUMENT
        )


async def test_forged_tokens_on_comms(comms) -> None:  # type: ignore[no-untyped-def]
    from toex.comms.v1 import comms_pb2 as cpb

    made_up = paging_pb2.PageCursor(last_sort_key="yesterday")
    for token in (
        "!!not base64!!",
        base64.urlsafe_b64encode(uuid.uuid4().bytes * 3).decode(),
        base64.urlsafe_b64encode(made_up.SerializeToString()).decode().rstrip("="),
    ):
        request = cpb.ListDatasetsRequest(parent="regions/EMSOU", page_token=token)
        assert (
            await refused(comms.stub.ListDatasets, request, comms.md(NC)) == grpc.StatusCode.INVALID_ARGUMENT
        )
