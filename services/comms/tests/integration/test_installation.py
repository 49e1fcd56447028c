"""Comms analysis as one installation of the national system, against real PostgreSQL,
nats-server and Keycloak: a region installation (LONDON) imports and analyses only its own
region's comms data and names the installation of any other (an upload's header included); it
keeps no grant of another region's job, so an EMSOU job's material is there for nobody; the hub
holds the national team's."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import comms_pb2_grpc
from toex.comms.v1 import resources_pb2 as res
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
from toex_comms import demo
from toex_comms.__main__ import migrations_dir
from toex_comms.bootstrap import build
from toex_comms.config import Settings

from .conftest import md, upload
from .test_comms_service import csv_bytes

pytestmark = pytest.mark.integration

RESEARCHER, NC = "researcher.london", "national_coordinator.national"


@contextlib.asynccontextmanager
async def installed(
    database: str, nats_url: str, issuer: str, data_dir: Path, **installation: str
) -> AsyncIterator[tuple[Any, comms_pb2_grpc.CommsAnalysisServiceStub]]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    app = await build(
        Settings(
            service_name=f"comms-{uuid.uuid4().hex[:8]}",
            database_url=database,
            nats_url=nats_url,
            oidc_issuer=issuer,
            grpc_port=0,
            service_client_secret="toex-comms-local-secret",
            outbox_poll_seconds=0.2,
            data_dir=data_dir,
            consume_events=True,
            **installation,  # type: ignore[arg-type]
        )
    )
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield app, comms_pb2_grpc.CommsAnalysisServiceStub(channel)
    finally:
        await channel.close()
        await app.server.stop(1)
        await app.shutdown()


CDR = csv_bytes(demo.demo_cdr_rows()[:6])


def watchlist(region: str) -> pb.CreateWatchlistRequest:
    return pb.CreateWatchlistRequest(
        parent=f"regions/{region}",
        watchlist_id=f"w{uuid.uuid4().hex[:8]}",
        watchlist=pb.Watchlist(display_name="Persons of interest", kind=res.WATCHLIST_KIND_SUSPECT),
    )


async def test_a_region_installation_analyses_its_own_data_and_no_other_regions_grants(
    database: str, nats_server: Any, keycloak: Any, comms_tokens: Any, tmp_path: Path
) -> None:
    tokens = comms_tokens
    async with installed(
        database, nats_server.url, keycloak.issuer, tmp_path / "data", **LONDON_INSTALLATION
    ) as (app, stub):
        emsou_job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
        london_job = f"regions/LONDON/jobs/{uuid.uuid4().hex[:12]}"
        await publish_job_access(nats_server.url, emsou_job, [RESEARCHER])
        await publish_job_access(nats_server.url, london_job, [RESEARCHER])
        assert await eventually(lambda: grants_held(app.engine, [london_job])), "London's grant never came"
        assert await grants_held(app.engine, [emsou_job, london_job]) == {london_job}

        holder = md(tokens[RESEARCHER], emsou_job)
        await refused_for(
            stub.ImportCdr(upload(pb.ImportCdrRequest, "regions/EMSOU", CDR, job=emsou_job), metadata=holder),
            "EMSOU",
        )
        await refused_for(
            stub.GetDataset(pb.GetDatasetRequest(name="regions/EMSOU/datasets/d1"), metadata=holder), "EMSOU"
        )
        await refused_for(
            stub.GetContactNetwork(
                pb.GetContactNetworkRequest(
                    scope=pb.AnalysisScope(parent="regions/EMSOU", job=emsou_job), targets=["+447700900001"]
                ),
                metadata=holder,
            ),
            "EMSOU",
        )
        await refused_for(
            stub.SearchPhoneIndex(
                pb.SearchPhoneIndexRequest(parent="regions/EMSOU", number="+447700900001"), metadata=holder
            ),
            "EMSOU",
        )
        await refused_for(stub.CreateWatchlist(watchlist("NATIONAL"), metadata=md(tokens[NC])), "NATIONAL")

        # its own region's: imported, listed, kept on watchlists here
        own = await stub.ImportCdr(
            upload(pb.ImportCdrRequest, "regions/LONDON", CDR), metadata=md(tokens[RESEARCHER])
        )
        assert own.dataset.name.startswith("regions/LONDON/datasets/")
        for who in (md(tokens[NC]), holder):
            listed = await stub.ListDatasets(pb.ListDatasetsRequest(parent="regions/-"), metadata=who)
            assert [d.name for d in listed.datasets] == [own.dataset.name]
        made = await stub.CreateWatchlist(watchlist("LONDON"), metadata=md(tokens[RESEARCHER]))
        assert made.watchlist.name.startswith("regions/LONDON/watchlists/")
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.london.") for s in subjects), (name, subjects)


async def test_the_hub_holds_the_national_teams_own_data(
    database: str, nats_server: Any, keycloak: Any, comms_tokens: Any, tmp_path: Path
) -> None:
    tokens = comms_tokens
    async with installed(
        database, nats_server.url, keycloak.issuer, tmp_path / "data", **HUB_INSTALLATION
    ) as (app, stub):
        message = await refused_for(
            stub.ImportCdr(
                upload(pb.ImportCdrRequest, "regions/LONDON", CDR), metadata=md(tokens[RESEARCHER])
            ),
            "LONDON",
        )
        assert message.endswith("this is the national hub")
        made = await stub.CreateWatchlist(watchlist("NATIONAL"), metadata=md(tokens[NC]))
        assert made.watchlist.name.startswith("regions/NATIONAL/watchlists/")
        listed = await stub.ListWatchlists(
            pb.ListWatchlistsRequest(parent="regions/NATIONAL"), metadata=md(tokens[NC])
        )
        assert [w.name for w in listed.watchlists] == [made.watchlist.name]
        for name, subjects in (await consumer_subjects(app)).items():
            assert subjects and all(s.startswith("toex.national.") for s in subjects), (name, subjects)
