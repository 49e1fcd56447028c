"""The security tier: each finding of the security review proven closed against real servers.

Every test here demonstrates an attack (it failed on the code before its fix) and must now be
refused. The servers come from the devstack pytest plugin (`postgres`, `nats_server`,
`keycloak`, `database`), as in the integration tier; `start_service` runs one service in this
process on a free port, as the service tiers' fixtures do.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import make_url
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2 as tpb
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.testing.services import serve_in_process, stop_in_process
from toex_devstack.keycloak import DemoTokens as Tokens


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/security/" in str(item.fspath):
            item.add_marker(pytest.mark.security)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def tokens(keycloak: Any) -> Tokens:
    return Tokens(keycloak)


def keycloak_admin(base: str) -> dict[str, str]:
    """Headers for Keycloak's admin API, as the test Keycloak's admin (admin/admin)."""
    import httpx

    response = httpx.post(
        f"{base}/realms/master/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "admin-cli", "username": "admin", "password": "admin"},
        timeout=30,
    )
    response.raise_for_status()
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def md(token: str, purpose: str | None = "Op SANDPIPER") -> list[tuple[str, str]]:
    """Call metadata: the bearer token and, unless None, a purpose."""
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


@dataclass
class Service:
    app: Any
    channel: grpc.aio.Channel
    stub: Any
    tokens: Tokens
    database: str

    def md(self, username: str, purpose: str | None = "Op SANDPIPER") -> list[tuple[str, str]]:
        return md(self.tokens[username], purpose)


async def start_service(
    package: str,
    stub_class: Callable[[grpc.aio.Channel], Any],
    *,
    database: str,
    nats_url: str,
    issuer: str,
    tokens: Tokens,
    postgres: Any,
    database_query: str = "",
    **settings: Any,
) -> Service:
    """`package` (e.g. "toex_entity") migrated into `database` and serving gRPC on a free port.
    As in production, an owning role migrates and the service runs as a runtime role that may
    only append to the audit log; `database` (the superuser's URL) stays the test's own."""
    roles = postgres.service_database(make_url(database).database, owner=OWNER_ROLE, runtime=RUNTIME_ROLE)
    app = await serve_in_process(
        package,
        database_url=roles.runtime_url + database_query,
        migration_database_url=roles.migration_url + database_query,
        nats_url=nats_url,
        oidc_issuer=issuer,
        **settings,
    )
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return Service(app, channel, stub_class(channel), tokens, database)


async def stop_service(service: Service) -> None:
    await service.channel.close()
    await stop_in_process(service.app)


# Roles are cluster-wide: every database of this tier is owned by one role and served by another.
OWNER_ROLE = "toex_sec_owner"
RUNTIME_ROLE = "toex_sec_app"

Launch = Callable[..., Awaitable[Service]]


@pytest.fixture
async def launch(
    database: str, postgres: Any, nats_server: Any, keycloak: Any, tokens: Tokens
) -> AsyncIterator[Launch]:
    """Start services in this process against the session's servers (a test may give another
    `database`, `nats_url` or `issuer`, and any setting); all are stopped after the test."""
    started: list[Service] = []

    async def launch_service(
        package: str, stub_class: Callable[[grpc.aio.Channel], Any], **given: Any
    ) -> Service:
        given.setdefault("database", database)
        given.setdefault("nats_url", nats_server.url)
        given.setdefault("issuer", keycloak.issuer)
        service = await start_service(package, stub_class, tokens=tokens, postgres=postgres, **given)
        started.append(service)
        return service

    yield launch_service
    for service in reversed(started):
        await stop_service(service)


@pytest.fixture
async def entity(launch: Launch) -> Service:
    from toex.entity.v1 import entity_pb2_grpc

    return await launch("toex_entity", entity_pb2_grpc.EntityResolutionServiceStub)


@pytest.fixture
async def tasking(launch: Launch) -> Service:

    return await launch("toex_tasking", tasking_pb2_grpc.TaskingServiceStub)


@pytest.fixture
async def comms(launch: Launch, tmp_path: Any) -> Service:
    from toex.comms.v1 import comms_pb2_grpc

    return await launch(
        "toex_comms",
        comms_pb2_grpc.CommsAnalysisServiceStub,
        data_dir=tmp_path / "data",
        consume_events=False,
    )


@pytest.fixture
def pnd_simulator(tmp_path: Any) -> Any:
    """The PND simulator as its own process (python -m toex_pnd.simulator); its URL."""
    import subprocess
    import sys
    import time

    import httpx
    from toex_devstack._proc import free_port

    port = free_port()
    log = (tmp_path / "simulator.log").open("ab")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "toex_pnd.simulator",
            "--port",
            str(port),
            "--data-dir",
            str(tmp_path / "pnd"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the PND simulator did not start")
        time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(10)
    log.close()


@pytest.fixture
async def pnd(launch: Launch, pnd_simulator: str) -> Service:
    from toex.pnd.v1 import pnd_pb2_grpc

    return await launch(
        "toex_pnd",
        pnd_pb2_grpc.PndSyncServiceStub,
        pnd_url=pnd_simulator,
        dispatch_poll_seconds=0.1,
        reconcile_interval_seconds=0,
    )


@pytest.fixture
async def safeguarding(launch: Launch) -> Service:
    from toex_devstack._proc import free_port

    return await launch(
        "toex_safeguarding",
        safeguarding_pb2_grpc.SafeguardingServiceStub,
        service_name=f"safeguarding-{uuid.uuid4().hex[:8]}",
        tasking_address=f"127.0.0.1:{free_port()}",
    )


@dataclass
class Stack:
    tasking: Any
    safeguarding: Any
    jobs: dict[str, str]

    async def notes(self, job: str) -> list[tpb.JobNote]:
        got = await self.tasking.stub.GetJob(
            tpb.GetJobRequest(name=job), metadata=self.tasking.md("national_coordinator.national")
        )
        return list(got.job.notes)


@pytest.fixture
async def stack(postgres, launch) -> Stack:  # type: ignore[no-untyped-def]
    """Tasking and safeguarding on real servers, and a job in EMSOU and one in ERSOU."""
    tasking_db = postgres.create_database(f"t_sec_tasking_{uuid.uuid4().hex[:10]}")
    # Its own name: its own durable consumer of the job notes, not another test's.
    tasking = await launch(
        "toex_tasking",
        tasking_pb2_grpc.TaskingServiceStub,
        database=tasking_db,
        service_name=f"tasking-{uuid.uuid4().hex[:8]}",
    )
    safeguarding = await launch(
        "toex_safeguarding",
        safeguarding_pb2_grpc.SafeguardingServiceStub,
        service_name=f"safeguarding-{uuid.uuid4().hex[:8]}",
        tasking_address=f"127.0.0.1:{tasking.app.port}",
    )
    due = Timestamp()
    due.FromDatetime(datetime.now(UTC) + timedelta(days=7))
    jobs = {}
    for region in ("EMSOU", "ERSOU"):
        jobs[region] = (
            await tasking.stub.CreateJob(
                tpb.CreateJobRequest(
                    parent=f"regions/{region}",
                    job=tpb.Job(
                        requesting_unit="Unit",
                        operation_name="Op HERON",
                        job_type=tpb.JOB_TYPE_SAFEGUARDING,
                        due_time=due,
                    ),
                ),
                metadata=tasking.md("national_coordinator.national"),
            )
        ).job.name
    return Stack(tasking, safeguarding, jobs)
