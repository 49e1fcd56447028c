"""A real entity service (gRPC on a free port) over real PostgreSQL, NATS and Keycloak."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest
from toex.entity.v1 import entity_pb2_grpc
from toex_common.migrations import upgrade
from toex_devstack.keycloak import DemoTokens as Tokens
from toex_entity.__main__ import migrations_dir
from toex_entity.bootstrap import App, build
from toex_entity.config import Settings


@dataclass
class Running:
    app: App
    channel: grpc.aio.Channel
    stub: entity_pb2_grpc.EntityResolutionServiceStub
    tokens: dict[str, str]
    database: str

    def token(self, username: str) -> str:
        return self.tokens[username]


@pytest.fixture(scope="session")
def tokens(keycloak: object) -> Tokens:
    return Tokens(keycloak)


@pytest.fixture
async def entity_service(database: str, nats_server, keycloak, tokens: Tokens) -> AsyncIterator[Running]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    settings = Settings(
        database_url=database,
        nats_url=nats_server.url,
        oidc_issuer=keycloak.issuer,
        grpc_port=0,
        service_client_secret="toex-entity-local-secret",
        outbox_poll_seconds=0.2,
    )
    app = await build(settings)
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    yield Running(app, channel, entity_pb2_grpc.EntityResolutionServiceStub(channel), tokens, database)
    await channel.close()
    await app.server.stop(1)
    await app.shutdown()
