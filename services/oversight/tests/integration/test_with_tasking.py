"""The real tasking service's events, as it publishes them, counted at the hub: an EMSOU job the
national coordinator gives to LONDON's researcher (tasking resilience), its due time and
priority changed, delivered, closed and rated."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import field_mask_pb2
from toex.tasking.v1 import tasking_pb2 as tasking
from toex.tasking.v1 import tasking_pb2_grpc
from toex.type.v1 import region_pb2
from toex_common.migrations import upgrade
from toex_kernel.timestamps import timestamp
from toex_tasking.__main__ import migrations_dir as tasking_migrations
from toex_tasking.bootstrap import build as build_tasking
from toex_tasking.config import Settings as TaskingSettings

from .conftest import Oversight

pytestmark = pytest.mark.integration

NC = "national_coordinator.national"


@pytest.fixture
async def tasking_stub(
    postgres: Any, own_nats: Any, keycloak: Any
) -> AsyncIterator[tasking_pb2_grpc.TaskingServiceStub]:
    name = f"t_ov_tasking_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(name)
    await asyncio.to_thread(upgrade, url, tasking_migrations())
    app = await build_tasking(
        TaskingSettings(
            service_name=f"tasking-{uuid.uuid4().hex[:6]}",
            database_url=url,
            nats_url=own_nats.url,
            oidc_issuer=keycloak.issuer,
            grpc_port=0,
            directory="static",
            outbox_poll_seconds=0.2,
        )
    )
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    yield tasking_pb2_grpc.TaskingServiceStub(channel)
    await channel.close()
    await app.server.stop(0.5)
    await app.shutdown()
    postgres.drop_database(name)


async def test_a_job_worked_across_regions_is_counted_from_taskings_own_events(
    oversight: Oversight, tasking_stub: tasking_pb2_grpc.TaskingServiceStub
) -> None:
    md = [("authorization", f"Bearer {oversight.tokens[NC]}"), ("x-toex-purpose", "Op KITE")]
    now = datetime.now(UTC)
    created = await tasking_stub.CreateJob(
        tasking.CreateJobRequest(
            parent="regions/EMSOU",
            job=tasking.Job(
                requesting_unit="Derbyshire Constabulary",
                requesting_officer="DS Example",
                operation_name="Op KITE",
                job_type=tasking.JOB_TYPE_ANPR,
                priority=tasking.PRIORITY_ROUTINE,
                due_time=timestamp(now + timedelta(hours=1)),
                description="vehicles of persons of interest",
            ),
        ),
        metadata=md,
    )
    name = created.job.name
    await tasking_stub.AssignJob(
        tasking.AssignJobRequest(name=name, assignees=["researcher.london"]), metadata=md
    )
    # Due later and urgent now: the values travel on JobUpdated, ordered by its revision.
    await tasking_stub.UpdateJob(
        tasking.UpdateJobRequest(
            job=tasking.Job(
                name=name, due_time=timestamp(now + timedelta(days=2)), priority=tasking.PRIORITY_URGENT
            ),
            update_mask=field_mask_pb2.FieldMask(paths=["due_time", "priority"]),
        ),
        metadata=md,
    )
    for state in (tasking.JOB_STATE_IN_PROGRESS, tasking.JOB_STATE_DELIVERED, tasking.JOB_STATE_CLOSED):
        await tasking_stub.UpdateJobStatus(
            tasking.UpdateJobStatusRequest(name=name, state=state, product="vehicle report"), metadata=md
        )
    await tasking_stub.RecordFeedback(
        tasking.RecordFeedbackRequest(name=name, rating=5, comment="good"), metadata=md
    )

    answer = await oversight.until(
        lambda a: next(r for r in a.regions if r.region == region_pb2.REGION_EMSOU).jobs.feedback.rated == 1
    )
    emsou = next(r for r in answer.regions if r.region == region_pb2.REGION_EMSOU)
    london = next(r for r in answer.regions if r.region == region_pb2.REGION_LONDON)
    jobs = emsou.jobs
    assert jobs.raised == 1 and jobs.states.closed == 1 and jobs.types.anpr == 1
    assert jobs.priorities.urgent == 1 and jobs.priorities.routine == 0
    assert (jobs.delivered_on_time, jobs.delivered_late) == (1, 0)
    assert jobs.taken_by_other_regions == 1 and london.jobs.taken_for_other_regions == 1
    assert list(jobs.feedback.by_rating) == [0, 0, 0, 0, 1]
    # JobCreated, JobAssigned, JobStatusChanged (ASSIGNED), JobUpdated, three status changes, feedback.
    assert emsou.events_counted == 8
    # The due time kept is the one the update gave (two days), under the update's revision.
    conn = await asyncpg.connect(oversight.database.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        row = await conn.fetchrow(
            "SELECT due_at, due_revision, priority_revision FROM jobs WHERE job = $1", name
        )
    finally:
        await conn.close()
    assert abs(row["due_at"] - (now + timedelta(days=2))) < timedelta(seconds=1)
    assert row["due_revision"] == row["priority_revision"] > 1
