"""Entity resolution as one installation of the national system, against real PostgreSQL,
nats-server and Keycloak: a region installation (LONDON) stores and resolves only its own
region's records and names the installation of any other, in a single call or anywhere in an
upload; it keeps no grant of another region's job, so an EMSOU job's material is there for nobody;
the hub holds the national team's records."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex_common.migrations import upgrade
from toex_common.testing.installations import (
    HUB_INSTALLATION,
    LONDON_INSTALLATION,
    consumer_subjects,
    eventually,
    grants_held,
    publish_job_access,
    refused_for,
)
from toex_entity.__main__ import migrations_dir
from toex_entity.bootstrap import build
from toex_entity.config import Settings

from .test_entity_service import md, person, unique_person

pytestmark = pytest.mark.integration

RESEARCHER, NC = "researcher.london", "national_coordinator.national"


@contextlib.asynccontextmanager
async def installed(
    database: str, nats_url: str, issuer: str, **installation: str
) -> AsyncIterator[tuple[Any, entity_pb2_grpc.EntityResolutionServiceStub]]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    app = await build(
        Settings(
            service_name=f"entity-{uuid.uuid4().hex[:8]}",
            database_url=database,
            nats_url=nats_url,
            oidc_issuer=issuer,
            grpc_port=0,
            service_client_secret="toex-entity-local-secret",
            outbox_poll_seconds=0.2,
            **installation,  # type: ignore[arg-type]
        )
    )
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield app, entity_pb2_grpc.EntityResolutionServiceStub(channel)
    finally:
        await channel.close()
        await app.server.stop(1)
        await app.shutdown()


def resolve(region: str) -> pb.ResolveRecordRequest:
    return pb.ResolveRecordRequest(
        parent=f"regions/{region}", record=person(uuid.uuid4().hex, **unique_person())
    )


async def test_a_region_installation_resolves_its_own_records_and_no_other_regions_grants(
    database: str, nats_server: Any, keycloak: Any, tokens: Any
) -> None:
    async with installed(database, nats_server.url, keycloak.issuer, **LONDON_INSTALLATION) as (app, stub):
        emsou_job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
        london_job = f"regions/LONDON/jobs/{uuid.uuid4().hex[:12]}"
        await publish_job_access(nats_server.url, emsou_job, [RESEARCHER])
        await publish_job_access(nats_server.url, london_job, [RESEARCHER])
        assert await eventually(lambda: grants_held(app.engine, [london_job])), "London's grant never came"
        assert await grants_held(app.engine, [emsou_job, london_job]) == {london_job}

        holder = md(tokens[RESEARCHER], emsou_job)
        await refused_for(stub.ResolveRecord(resolve("EMSOU"), metadata=holder), "EMSOU")

        async def upload() -> AsyncIterator[pb.IngestRecordsRequest]:
            for region in ("LONDON", "EMSOU"):
                yield pb.IngestRecordsRequest(parent=f"regions/{region}", record=resolve(region).record)

        await refused_for(stub.IngestRecords(upload(), metadata=holder), "EMSOU")
        await refused_for(
            stub.ExplainMatch(
                pb.ExplainMatchRequest(
                    record_a="regions/LONDON/records/a", record_b="regions/EMSOU/records/b"
                ),
                metadata=holder,
            ),
            "EMSOU",
        )
        await refused_for(
            stub.ListReviewTasks(pb.ListReviewTasksRequest(parent="regions/EMSOU"), metadata=holder), "EMSOU"
        )
        await refused_for(
            stub.DecideReview(
                pb.DecideReviewRequest(
                    name="regions/NATIONAL/reviewTasks/t1", decision=pb.REVIEW_DECISION_CONFIRM
                ),
                metadata=md(tokens[NC]),
            ),
            "NATIONAL",
        )

        # its own region's records: resolved, read, reviewed here
        own = await stub.ResolveRecord(resolve("LONDON"), metadata=md(tokens[RESEARCHER]))
        assert own.record.name.startswith("regions/LONDON/records/")
        read = await stub.GetEntity(
            pb.GetEntityRequest(name=own.entity.name), metadata=md(tokens[RESEARCHER])
        )
        assert [r.name for r in read.entity.records] == [own.record.name]
        await stub.ListReviewTasks(
            pb.ListReviewTasksRequest(parent="regions/-"), metadata=md(tokens[RESEARCHER])
        )
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.london.") for s in subjects), (name, subjects)


async def test_the_hub_holds_the_national_teams_own_records(
    database: str, nats_server: Any, keycloak: Any, tokens: Any
) -> None:
    async with installed(database, nats_server.url, keycloak.issuer, **HUB_INSTALLATION) as (app, stub):
        message = await refused_for(
            stub.ResolveRecord(resolve("LONDON"), metadata=md(tokens[RESEARCHER])), "LONDON"
        )
        assert message.endswith("this is the national hub")
        own = await stub.ResolveRecord(resolve("NATIONAL"), metadata=md(tokens[NC]))
        assert own.record.name.startswith("regions/NATIONAL/records/")
        for name, subjects in (await consumer_subjects(app)).items():
            if name.endswith("fingerprint-matcher"):
                continue  # deconfliction matches fingerprints of every region, at the hub alone
            assert subjects and all(s.startswith("toex.national.") for s in subjects), (name, subjects)
