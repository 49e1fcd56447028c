"""A real comms service (gRPC on a free port) over real PostgreSQL, NATS and Keycloak."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import comms_pb2_grpc
from toex_common.migrations import upgrade
from toex_comms.__main__ import migrations_dir
from toex_comms.bootstrap import App, build
from toex_comms.config import Settings
from toex_devstack.keycloak import DemoTokens as Tokens


@pytest.fixture(scope="session")
def comms_tokens(keycloak: object) -> Tokens:
    return Tokens(keycloak)


def md(token: str, purpose: str | None = "Op KESTREL") -> list[tuple[str, str]]:
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


def upload(
    kind: type,
    parent: str,
    data: bytes,
    *,
    filename: str = "file.csv",
    chunk: int = 64 * 1024,
    **header: object,
) -> Iterable[object]:
    yield kind(header=pb.ImportHeader(parent=parent, filename=filename, **header))  # type: ignore[arg-type]
    for i in range(0, len(data), chunk):
        yield kind(chunk=data[i : i + chunk])


@dataclass
class Running:
    app: App
    channel: grpc.aio.Channel
    stub: comms_pb2_grpc.CommsAnalysisServiceStub
    tokens: Tokens
    data_dir: Path

    def md(self, username: str, purpose: str | None = "Op KESTREL") -> list[tuple[str, str]]:
        return md(self.tokens[username], purpose)


@contextlib.asynccontextmanager
async def running(
    database: str, nats_url: str, issuer: str, tokens: Tokens, data_dir: Path, *, consume_events: bool
) -> AsyncIterator[Running]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    settings = Settings(
        database_url=database,
        nats_url=nats_url,
        oidc_issuer=issuer,
        grpc_port=0,
        service_client_secret="toex-comms-local-secret",
        outbox_poll_seconds=0.2,
        data_dir=data_dir,
        import_batch_rows=7,
        consume_events=consume_events,
    )
    app = await build(settings)
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    try:
        yield Running(
            app, channel, comms_pb2_grpc.CommsAnalysisServiceStub(channel), tokens, settings.data_dir
        )
    finally:
        await channel.close()
        await app.server.stop(1)
        await app.shutdown()


@pytest.fixture
async def comms(
    database: str, nats_server, keycloak, comms_tokens: Tokens, tmp_path: Path
) -> AsyncIterator[Running]:
    async with running(
        database, nats_server.url, keycloak.issuer, comms_tokens, tmp_path / "data", consume_events=False
    ) as found:
        yield found


@pytest.fixture
async def comms_consuming(
    database: str, nats_server, keycloak, comms_tokens: Tokens, tmp_path: Path
) -> AsyncIterator[Running]:
    """The service with its consumers running (jobs, entity links, job grants)."""
    async with running(
        database, nats_server.url, keycloak.issuer, comms_tokens, tmp_path / "data", consume_events=True
    ) as found:
        yield found
