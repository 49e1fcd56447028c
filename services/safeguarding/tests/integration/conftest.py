"""A real safeguarding service and a real tasking service (gRPC on free ports) over real
PostgreSQL, NATS and Keycloak, started in-process."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_devstack.keycloak import DemoTokens as Tokens
from toex_safeguarding.__main__ import migrations_dir
from toex_safeguarding.bootstrap import App, build
from toex_safeguarding.config import Settings
from toex_tasking.__main__ import migrations_dir as tasking_migrations
from toex_tasking.bootstrap import App as TaskingApp
from toex_tasking.bootstrap import build as build_tasking
from toex_tasking.config import Settings as TaskingSettings


@pytest.fixture(scope="session")
def tokens(keycloak: object) -> Tokens:
    return Tokens(keycloak)


class MovableClock:
    """The service's idea of now: real time plus an offset a test can move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> datetime:
        from datetime import timedelta

        return datetime.now(UTC) + timedelta(seconds=self.offset)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Tasking:
    app: TaskingApp
    channel: grpc.aio.Channel
    stub: tasking_pb2_grpc.TaskingServiceStub

    async def stop(self) -> None:
        await self.channel.close()
        await self.app.server.stop(0.5)
        await self.app.shutdown()


async def start_tasking(database: str, nats_url: str, issuer: str, port: int, name: str) -> Tasking:
    """Tasking on `port`; `name` (its service name) names its durable consumers (of the referral
    events), so a tasking started again under the same name carries on where the last one stopped."""
    settings = TaskingSettings(
        service_name=name,
        database_url=database,
        nats_url=nats_url,
        oidc_issuer=issuer,
        grpc_port=port,
        directory="static",
        overdue_scan_seconds=30,
        outbox_poll_seconds=0.2,
    )
    app = await build_tasking(settings)
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return Tasking(app, channel, tasking_pb2_grpc.TaskingServiceStub(channel))


@dataclass
class Running:
    app: App
    channel: grpc.aio.Channel
    stub: safeguarding_pb2_grpc.SafeguardingServiceStub
    tokens: Tokens
    clock: MovableClock
    tasking_port: int
    tasking_database: str
    tasking_name: str

    def token(self, username: str) -> str:
        return self.tokens[username]


@pytest.fixture
async def tasking_database(postgres) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    name = f"t_sg_tasking_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(name)
    await asyncio.to_thread(upgrade, url, tasking_migrations())
    yield url
    postgres.drop_database(name)


async def start_safeguarding(
    database: str, nats_url: str, issuer: str, tokens: Tokens, tasking_port: int, tasking_database: str
) -> Running:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    settings = Settings(
        service_name=f"safeguarding-{uuid.uuid4().hex[:8]}",
        database_url=database,
        nats_url=nats_url,
        oidc_issuer=issuer,
        grpc_port=0,
        service_client_secret="toex-safeguarding-local-secret",
        tasking_address=f"127.0.0.1:{tasking_port}",
        overdue_scan_seconds=0.3,
        outbox_poll_seconds=0.2,
    )
    app = await build(settings)
    clock = MovableClock()
    app.deps.clock = clock
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    return Running(
        app,
        channel,
        safeguarding_pb2_grpc.SafeguardingServiceStub(channel),
        tokens,
        clock,
        tasking_port,
        tasking_database,
        f"tasking-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
async def safeguarding(
    database: str, tasking_database: str, nats_server, keycloak, tokens: Tokens
) -> AsyncIterator[Running]:  # type: ignore[no-untyped-def]
    running = await start_safeguarding(
        database, nats_server.url, keycloak.issuer, tokens, free_port(), tasking_database
    )
    yield running
    await running.channel.close()
    await running.app.server.stop(1)
    await running.app.shutdown()


@pytest.fixture
async def tasking(safeguarding: Running, nats_server, keycloak) -> AsyncIterator[Tasking]:  # type: ignore[no-untyped-def]
    """The tasking service on the port the safeguarding service asks about jobs, showing the
    referral events it publishes on their jobs."""
    running = await start_tasking(
        safeguarding.tasking_database,
        nats_server.url,
        keycloak.issuer,
        safeguarding.tasking_port,
        safeguarding.tasking_name,
    )
    yield running
    await running.stop()
