"""A real tasking service (gRPC on a free port) over real PostgreSQL, NATS and Keycloak."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_devstack.keycloak import DemoTokens as Tokens
from toex_tasking.__main__ import migrations_dir
from toex_tasking.bootstrap import App, build
from toex_tasking.config import Settings


@dataclass
class Running:
    app: App
    channel: grpc.aio.Channel
    stub: tasking_pb2_grpc.TaskingServiceStub
    tokens: dict[str, str]

    def token(self, username: str) -> str:
        return self.tokens[username]


@pytest.fixture(scope="session")
def tokens(keycloak: object) -> Tokens:
    return Tokens(keycloak)


@pytest.fixture
async def tasking(database: str, nats_server, keycloak, tokens: Tokens) -> AsyncIterator[Running]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    settings = Settings(
        database_url=database,
        nats_url=nats_server.url,
        oidc_issuer=keycloak.issuer,
        grpc_port=0,
        service_client_secret="toex-tasking-local-secret",
        overdue_scan_seconds=0.5,
        outbox_poll_seconds=0.2,
    )
    app = await build(settings)
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    yield Running(app, channel, tasking_pb2_grpc.TaskingServiceStub(channel), tokens)
    await channel.close()
    await app.server.stop(1)
    await app.shutdown()
