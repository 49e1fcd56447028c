"""Safeguarding as one installation of the national system, against real PostgreSQL, nats-server
and Keycloak, with the installation's own tasking service: a region installation (EMSOU, whose
officers are demo users) drafts and reads only its own region's referrals and names the
installation of any other; a referral links only a job its installation's tasking holds; it keeps
no grant of another region's job; the hub holds the national team's referrals."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as tpb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.db import audit_table
from toex_common.migrations import upgrade
from toex_common.testing.installations import (
    EMSOU_INSTALLATION,
    HUB_INSTALLATION,
    consumer_subjects,
    eventually,
    grants_held,
    publish_job_access,
    refused_for,
)
from toex_safeguarding.__main__ import migrations_dir
from toex_safeguarding.bootstrap import build
from toex_safeguarding.config import Settings
from toex_tasking.bootstrap import build as build_tasking
from toex_tasking.config import Settings as TaskingSettings

from .conftest import free_port

pytestmark = pytest.mark.integration

SO, NC = "safeguarding_officer.emsou", "national_coordinator.national"


def md(tokens: Any, username: str, purpose: str = "Op KESTREL") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {tokens[username]}"), ("x-toex-purpose", purpose)]


@contextlib.asynccontextmanager
async def installed(
    database: str, tasking_database: str, nats_url: str, issuer: str, **installation: str
) -> AsyncIterator[tuple[Any, safeguarding_pb2_grpc.SafeguardingServiceStub, Any]]:
    """Safeguarding and the tasking it asks about jobs, both the installation the settings name."""
    await asyncio.to_thread(upgrade, database, migrations_dir())
    tasking = await build_tasking(
        TaskingSettings(
            service_name=f"tasking-{uuid.uuid4().hex[:8]}",
            database_url=tasking_database,
            nats_url=nats_url,
            oidc_issuer=issuer,
            grpc_port=free_port(),
            directory="static",
            outbox_poll_seconds=0.2,
            **installation,  # type: ignore[arg-type]
        )
    )
    app = await build(
        Settings(
            service_name=f"safeguarding-{uuid.uuid4().hex[:8]}",
            database_url=database,
            nats_url=nats_url,
            oidc_issuer=issuer,
            grpc_port=0,
            service_client_secret="toex-safeguarding-local-secret",
            tasking_address=f"127.0.0.1:{tasking.port}",
            outbox_poll_seconds=0.2,
            **installation,  # type: ignore[arg-type]
        )
    )
    for started in (tasking, app):
        await started.server.start()
        await started.start_background()
    channels = [grpc.aio.insecure_channel(f"127.0.0.1:{a.port}") for a in (app, tasking)]
    try:
        tasking.stub = tasking_pb2_grpc.TaskingServiceStub(channels[1])
        yield app, safeguarding_pb2_grpc.SafeguardingServiceStub(channels[0]), tasking
    finally:
        for channel in channels:
            await channel.close()
        for started in (app, tasking):
            await started.server.stop(1)
            await started.shutdown()


def referral(region: str, linked_job: str = "") -> pb.CreateReferralRequest:
    return pb.CreateReferralRequest(
        parent=f"regions/{region}",
        referral=pb.Referral(
            subject=pb.Subject(
                entity_id=f"ent-{uuid.uuid4().hex[:8]}", date_of_birth="2009-02-03", local_authority="Derby"
            ),
            concerns=[pb.CONCERN_CHILD_SEXUAL_EXPLOITATION],
            risk_level=pb.RISK_LEVEL_HIGH,
            linked_job=linked_job,
        ),
    )


async def test_a_region_installation_drafts_its_own_referrals_and_names_where_others_are(
    database: str, tasking_database: str, nats_server: Any, keycloak: Any, tokens: Any
) -> None:
    async with installed(
        database, tasking_database, nats_server.url, keycloak.issuer, **EMSOU_INSTALLATION
    ) as (app, stub, tasking):
        ersou_job = f"regions/ERSOU/jobs/{uuid.uuid4().hex[:12]}"
        own_job = (
            await tasking.stub.CreateJob(
                tpb.CreateJobRequest(
                    parent="regions/EMSOU",
                    job=tpb.Job(
                        requesting_unit="Derbyshire Constabulary",
                        operation_name="Op KESTREL",
                        job_type=tpb.JOB_TYPE_COMMS_ANALYSIS,
                        priority=tpb.PRIORITY_URGENT,
                        due_time={"seconds": 4_102_444_800},
                    ),
                ),
                metadata=md(tokens, NC),
            )
        ).job
        await publish_job_access(nats_server.url, ersou_job, [SO])
        await publish_job_access(nats_server.url, own_job.name, [SO], revision=9)
        assert await eventually(lambda: grants_held(app.engine, [own_job.name])), "EMSOU's grant never came"
        assert await grants_held(app.engine, [ersou_job, own_job.name]) == {own_job.name}

        officer = md(tokens, SO)
        message = await refused_for(stub.CreateReferral(referral("LONDON"), metadata=officer), "LONDON")
        assert message.endswith("this is the EMSOU installation")
        await refused_for(
            stub.GetReferral(
                pb.GetReferralRequest(name="regions/ERSOU/referrals/r1"), metadata=md(tokens, NC)
            ),
            "ERSOU",
        )
        await refused_for(
            stub.ListReferrals(pb.ListReferralsRequest(parent="regions/NATIONAL"), metadata=md(tokens, NC)),
            "NATIONAL",
        )

        # its own: drafted (linking a job this installation's tasking holds) and listed
        created = (await stub.CreateReferral(referral("EMSOU", own_job.name), metadata=officer)).referral
        assert created.name.startswith("regions/EMSOU/referrals/") and created.linked_job == own_job.name
        listed = await stub.ListReferrals(
            pb.ListReferralsRequest(parent="regions/-"), metadata=md(tokens, NC)
        )
        names = [r.name for r in listed.referrals]  # with any its consumers drafted from EMSOU's events
        assert created.name in names and all(n.startswith("regions/EMSOU/") for n in names)
        # a job of another installation is not one its tasking holds: not found, as a missing job
        with pytest.raises(grpc.aio.AioRpcError) as elsewhere:
            await stub.CreateReferral(referral("EMSOU", "regions/LONDON/jobs/j1"), metadata=officer)
        assert elsewhere.value.code() == grpc.StatusCode.NOT_FOUND, elsewhere.value.details()
        assert "regions/LONDON/jobs/j1 not found" in str(elsewhere.value.details())
        # (tasking here told it so, with the officer's token: the job is another installation's)
        async with tasking.engine.connect() as conn:
            asked = (
                (
                    await conn.execute(
                        select(audit_table.c.outcome).where(
                            audit_table.c.action == "/toex.tasking.v1.TaskingService/GetJob",
                            audit_table.c.actor_username == SO,
                        )
                    )
                )
                .scalars()
                .all()
            )
        assert sorted(asked) == ["FAILED_PRECONDITION", "OK"]
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.emsou.") for s in subjects), (name, subjects)


async def test_the_hub_holds_the_national_teams_own_referrals(
    database: str, tasking_database: str, nats_server: Any, keycloak: Any, tokens: Any
) -> None:
    async with installed(
        database, tasking_database, nats_server.url, keycloak.issuer, **HUB_INSTALLATION
    ) as (app, stub, _):
        message = await refused_for(stub.CreateReferral(referral("EMSOU"), metadata=md(tokens, SO)), "EMSOU")
        assert message.endswith("this is the national hub")
        for parent in ("regions/NATIONAL", "regions/-", ""):
            listed = await stub.ListReferrals(pb.ListReferralsRequest(parent=parent), metadata=md(tokens, NC))
            assert all(r.name.startswith("regions/NATIONAL/") for r in listed.referrals)
        await stub.ListOverdue(pb.ListOverdueRequest(parent="regions/-"), metadata=md(tokens, NC))
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.national.") for s in subjects), (name, subjects)
