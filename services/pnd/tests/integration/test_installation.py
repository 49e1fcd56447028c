"""PND sync as one installation of the national system, against real PostgreSQL, nats-server,
Keycloak and the PND simulator: a region installation (LONDON) holds and sends only its own
region's intelligence and names the installation of any other; it keeps no grant of another
region's job, so an EMSOU job's material is there for nobody; the hub holds the national team's;
EMSOU's installation serves the London researcher working an EMSOU job under their own token."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pnd_pb2_grpc
from toex_common.migrations import upgrade
from toex_common.testing.installations import (
    EMSOU_INSTALLATION,
    HUB_INSTALLATION,
    LONDON_INSTALLATION,
    consumer_subjects,
    eventually,
    grants_held,
    publish_job_access,
    refused_for,
)
from toex_pnd.__main__ import migrations_dir
from toex_pnd.bootstrap import build

from .conftest import settings_for
from .helpers import phone, submit

pytestmark = pytest.mark.integration

RESEARCHER, NC = "researcher.london", "national_coordinator.national"


def md(tokens: Any, username: str, purpose: str = "Op SANDPIPER") -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {tokens[username]}"), ("x-toex-purpose", purpose)]


@contextlib.asynccontextmanager
async def installed(
    database: str, nats_url: str, issuer: str, pnd_url: str, **installation: str
) -> AsyncIterator[tuple[Any, pnd_pb2_grpc.PndSyncServiceStub]]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    settings = settings_for(
        database, nats_url, issuer, pnd_url, service_name=f"pnd-{uuid.uuid4().hex[:8]}", **installation
    )
    app = await build(settings)
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield app, pnd_pb2_grpc.PndSyncServiceStub(channel)
    finally:
        await channel.close()
        await app.server.stop(1)
        await app.shutdown()


async def test_a_region_installation_holds_its_own_intelligence_and_no_other_regions_grants(
    database: str, nats_server: Any, keycloak: Any, tokens: Any, simulator: Any
) -> None:
    async with installed(
        database, nats_server.url, keycloak.issuer, simulator.url, **LONDON_INSTALLATION
    ) as (app, stub):
        emsou_job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
        london_job = f"regions/LONDON/jobs/{uuid.uuid4().hex[:12]}"
        # EMSOU's job names the London researcher; so does a London job, published after it
        await publish_job_access(nats_server.url, emsou_job, [RESEARCHER])
        await publish_job_access(nats_server.url, london_job, [RESEARCHER])
        assert await eventually(lambda: grants_held(app.engine, [london_job])), "London's grant never came"
        assert await grants_held(app.engine, [emsou_job, london_job]) == {london_job}

        # EMSOU's intelligence: neither recorded nor read here, even under the EMSOU job
        holder = md(tokens, RESEARCHER, emsou_job)
        await refused_for(
            stub.SubmitIntelligence(submit(phone("+447700900811"), "EMSOU"), metadata=holder), "EMSOU"
        )
        emsou_record = f"regions/EMSOU/intelligence/{uuid.uuid4().hex[:12]}"
        await refused_for(
            stub.GetIntelligence(pb.GetIntelligenceRequest(name=emsou_record), metadata=holder), "EMSOU"
        )
        await refused_for(
            stub.ListIntelligence(pb.ListIntelligenceRequest(parent="regions/EMSOU"), metadata=holder),
            "EMSOU",
        )
        await refused_for(
            stub.ListReconciliationItems(
                pb.ListReconciliationItemsRequest(parent="reconciliations/r1", region="EMSOU"),
                metadata=holder,
            ),
            "EMSOU",
        )

        # its own: recorded, read, listed (every region here is LONDON)
        own = (
            await stub.SubmitIntelligence(
                submit(phone("+447700900812"), "LONDON"), metadata=md(tokens, RESEARCHER)
            )
        ).record
        assert own.name.startswith("regions/LONDON/intelligence/")
        read = await stub.GetIntelligence(
            pb.GetIntelligenceRequest(name=own.name), metadata=md(tokens, RESEARCHER)
        )
        assert read.record.entity.phone.e164 == "+447700900812"
        for who in (md(tokens, NC), holder):
            listed = await stub.ListIntelligence(pb.ListIntelligenceRequest(parent="regions/-"), metadata=who)
            assert [r.name for r in listed.records] == [own.name]
        status = await stub.GetSyncStatus(pb.GetSyncStatusRequest(), metadata=md(tokens, NC))
        assert sum(c.count for c in status.records) == 1
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.london.") for s in subjects), (name, subjects)


async def test_the_hub_holds_the_national_teams_own_intelligence(
    database: str, nats_server: Any, keycloak: Any, tokens: Any, simulator: Any
) -> None:
    async with installed(database, nats_server.url, keycloak.issuer, simulator.url, **HUB_INSTALLATION) as (
        app,
        stub,
    ):
        message = await refused_for(
            stub.SubmitIntelligence(
                submit(phone("+447700900821"), "LONDON"), metadata=md(tokens, RESEARCHER)
            ),
            "LONDON",
        )
        assert message.endswith("this is the national hub")
        own = (
            await stub.SubmitIntelligence(submit(phone("+447700900822"), "NATIONAL"), metadata=md(tokens, NC))
        ).record
        assert own.name.startswith("regions/NATIONAL/intelligence/")
        listed = await stub.ListIntelligence(pb.ListIntelligenceRequest(), metadata=md(tokens, NC))
        assert [r.name for r in listed.records] == [own.name]
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.national.") for s in subjects), (name, subjects)


async def test_emsous_installation_serves_the_london_researcher_working_its_job(
    database: str, nats_server: Any, keycloak: Any, tokens: Any, simulator: Any
) -> None:
    async with installed(database, nats_server.url, keycloak.issuer, simulator.url, **EMSOU_INSTALLATION) as (
        app,
        stub,
    ):
        job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
        ersou_job = f"regions/ERSOU/jobs/{uuid.uuid4().hex[:12]}"
        await publish_job_access(nats_server.url, ersou_job, [RESEARCHER])
        await publish_job_access(nats_server.url, job, [RESEARCHER])
        assert await eventually(lambda: grants_held(app.engine, [job])), "the grant never came"
        assert await grants_held(app.engine, [job, ersou_job]) == {job}
        made = (
            await stub.SubmitIntelligence(
                submit(phone("+447700900831"), "EMSOU"), metadata=md(tokens, RESEARCHER, job)
            )
        ).record
        assert made.name.startswith("regions/EMSOU/intelligence/") and made.job == job
        read = await stub.GetIntelligence(
            pb.GetIntelligenceRequest(name=made.name), metadata=md(tokens, RESEARCHER, job)
        )
        assert read.record.created_by == RESEARCHER
        # without the job as the purpose the grant does not reach it: the rules, not the installation
        with pytest.raises(grpc.aio.AioRpcError) as no_job:
            await stub.GetIntelligence(
                pb.GetIntelligenceRequest(name=made.name), metadata=md(tokens, RESEARCHER)
            )
        assert no_job.value.code() == grpc.StatusCode.NOT_FOUND
        await refused_for(
            stub.SubmitIntelligence(
                submit(phone("+447700900832"), "LONDON"), metadata=md(tokens, RESEARCHER)
            ),
            "LONDON",
        )
