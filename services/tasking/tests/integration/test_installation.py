"""Tasking as one installation of the national system, against real PostgreSQL, nats-server and
Keycloak: a region installation (LONDON) serves, stores and publishes its own region's jobs and
refuses another region's with the installation to use; the hub holds the national team's own
jobs; EMSOU's installation serves an EMSOU job to the London researcher working it under their own
token. A single installation serving every region is what the other tests run."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_common.testing.installations import (
    EMSOU_INSTALLATION,
    HUB_INSTALLATION,
    LONDON_INSTALLATION,
    consumer_subjects,
    refused_for,
)
from toex_common.testing.streams import stream_messages
from toex_tasking.__main__ import migrations_dir
from toex_tasking.bootstrap import build
from toex_tasking.config import Settings

from .test_tasking_service import job_request, md

pytestmark = pytest.mark.integration

NC = "national_coordinator.national"
RESEARCHER = "researcher.london"


@contextlib.asynccontextmanager
async def installed(
    database: str, nats_url: str, issuer: str, **installation: str
) -> AsyncIterator[tuple[Any, tasking_pb2_grpc.TaskingServiceStub]]:
    """Tasking as the installation the settings name (its durable consumers its own)."""
    await asyncio.to_thread(upgrade, database, migrations_dir())
    app = await build(
        Settings(
            service_name=f"tasking-{uuid.uuid4().hex[:8]}",
            database_url=database,
            nats_url=nats_url,
            oidc_issuer=issuer,
            grpc_port=0,
            directory="static",
            outbox_poll_seconds=0.2,
            **installation,  # type: ignore[arg-type]
        )
    )
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield app, tasking_pb2_grpc.TaskingServiceStub(channel)
    finally:
        await channel.close()
        await app.server.stop(1)
        await app.shutdown()


async def test_a_region_installation_serves_its_own_jobs_and_names_where_others_are(
    database: str, nats_server: Any, keycloak: Any, tokens: Any
) -> None:
    async with installed(database, nats_server.url, keycloak.issuer, **LONDON_INSTALLATION) as (app, stub):
        nc = md(tokens[NC])
        # another region's job: neither raised nor read here, whoever asks
        message = await refused_for(stub.CreateJob(job_request("EMSOU"), metadata=nc), "EMSOU")
        assert message.endswith("this is the LONDON installation")
        emsou_job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
        await refused_for(stub.GetJob(pb.GetJobRequest(name=emsou_job), metadata=nc), "EMSOU")
        await refused_for(stub.ListJobs(pb.ListJobsRequest(parent="regions/EMSOU"), metadata=nc), "EMSOU")
        await refused_for(stub.CreateJob(job_request("NATIONAL"), metadata=nc), "NATIONAL")
        # an EMSOU job's material is here for nobody: the London researcher holding it is told
        # where it is (their grant is EMSOU's installation's to honour)
        await refused_for(
            stub.GetJob(pb.GetJobRequest(name=emsou_job), metadata=md(tokens[RESEARCHER], emsou_job)), "EMSOU"
        )
        await refused_for(
            stub.AddJobNote(
                pb.AddJobNoteRequest(parent=emsou_job, text="seen"),
                metadata=md(tokens[RESEARCHER], emsou_job),
            ),
            "EMSOU",
        )

        # its own region's: raised, read, listed, and published on its own subjects
        created = (await stub.CreateJob(job_request("LONDON"), metadata=nc)).job
        assert created.name.startswith("regions/LONDON/jobs/")
        read = await stub.GetJob(pb.GetJobRequest(name=created.name), metadata=md(tokens[RESEARCHER]))
        assert read.job.name == created.name
        listed = await stub.ListJobs(pb.ListJobsRequest(parent="regions/-"), metadata=nc)
        assert [j.name for j in listed.jobs] == [created.name]
        published = await stream_messages(
            nats_server.url,
            "toex.london.tasking.JobCreated",
            until=lambda found: any(m.headers and m.headers.get("ce-subject") == created.name for m in found),
        )
        assert any(m.headers and m.headers.get("ce-subject") == created.name for m in published)
        # its consumers (referral events, job notes, the inbox) read LONDON's subjects only
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.london.") for s in subjects), (name, subjects)


async def test_the_hub_holds_the_national_teams_own_jobs(
    database: str, nats_server: Any, keycloak: Any, tokens: Any
) -> None:
    async with installed(database, nats_server.url, keycloak.issuer, **HUB_INSTALLATION) as (app, stub):
        nc = md(tokens[NC])
        message = await refused_for(stub.CreateJob(job_request("LONDON"), metadata=nc), "LONDON")
        assert message.endswith("this is the national hub")
        await refused_for(stub.ListJobs(pb.ListJobsRequest(parent="regions/EMSOU"), metadata=nc), "EMSOU")
        created = (await stub.CreateJob(job_request("NATIONAL"), metadata=nc)).job
        assert created.name.startswith("regions/NATIONAL/jobs/")
        listed = await stub.ListJobs(pb.ListJobsRequest(), metadata=nc)
        assert [j.name for j in listed.jobs] == [created.name]
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.national.") for s in subjects), (name, subjects)


async def test_a_london_researcher_works_an_emsou_job_at_emsous_installation(
    database: str, nats_server: Any, keycloak: Any, tokens: Any
) -> None:
    """Tasking resilience across installations: the job lives at EMSOU's installation, which
    serves it (its region is EMSOU) to the London researcher assigned to it, with their own
    token; the caller's home region is for the job's rules to weigh, not the installation."""
    async with installed(database, nats_server.url, keycloak.issuer, **EMSOU_INSTALLATION) as (_, stub):
        nc = md(tokens[NC])
        job = (await stub.CreateJob(job_request("EMSOU"), metadata=nc)).job
        await stub.AssignJob(pb.AssignJobRequest(name=job.name, assignees=[RESEARCHER]), metadata=nc)
        london = md(tokens[RESEARCHER], job.name)
        read = await stub.GetJob(pb.GetJobRequest(name=job.name), metadata=london)
        assert [a.username for a in read.job.assignees] == [RESEARCHER]
        moved = await stub.UpdateJobStatus(
            pb.UpdateJobStatusRequest(name=job.name, state=pb.JOB_STATE_IN_PROGRESS), metadata=london
        )
        assert moved.job.state == pb.JOB_STATE_IN_PROGRESS
        mine = await stub.ListJobs(pb.ListJobsRequest(parent="regions/-"), metadata=london)
        assert [j.name for j in mine.jobs] == [job.name]
        # and London's own jobs are London's installation's
        await refused_for(stub.CreateJob(job_request("LONDON"), metadata=nc), "LONDON")
