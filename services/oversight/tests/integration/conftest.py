"""A real oversight service (gRPC on a free port) over real PostgreSQL and Keycloak, reading a
nats-server of its own: the overview's figures are every event on the streams, so each test
gets streams that hold its own events only. Events are published as the regions' services
publish them (build_event, Nats-Msg-Id = event id), on each region's subjects; the service's
reporter republishes them value-free on OVERSIGHT, and its aggregator counts those."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import nats
import pytest
from google.protobuf.message import Message
from nats.js import JetStreamContext
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex_common.events.envelope import EventEnvelope, build_event
from toex_common.events.streams import STREAMS, ensure_stream
from toex_common.migrations import upgrade
from toex_devstack.keycloak import DemoTokens
from toex_devstack.nats import NatsServer
from toex_kernel.regions import Region
from toex_oversight.__main__ import migrations_dir
from toex_oversight.bootstrap import App, build
from toex_oversight.config import Settings

PURPOSE = "Op OVERSIGHT national figures"


@pytest.fixture(scope="session")
def tokens(keycloak: Any) -> DemoTokens:
    return DemoTokens(keycloak)


@pytest.fixture
def own_nats() -> Any:
    store = Path(tempfile.mkdtemp(prefix="toex-test-oversight-nats-"))
    server = NatsServer(store_dir=store)
    server.start()
    yield server
    server.stop()
    shutil.rmtree(store, ignore_errors=True)


@dataclass
class Regions:
    """Publishes events as the regions' services do."""

    js: JetStreamContext
    published: list[EventEnvelope] = field(default_factory=list)

    async def publish(self, message: Message, region: Region, domain: str, **options: Any) -> EventEnvelope:
        envelope = build_event(message, domain=domain, source=f"toex/{domain}", region=region, **options)
        await self.send(envelope)
        return envelope

    async def send(self, envelope: EventEnvelope, msg_id: str | None = None) -> None:
        """Publish `envelope`; with another `msg_id` the stream keeps it again (as after its
        duplicate window, or a region re-publishing its history)."""
        headers = dict(envelope.headers)
        if msg_id is not None:
            headers["Nats-Msg-Id"] = msg_id
        await self.js.publish(envelope.subject, envelope.payload, headers=headers)
        self.published.append(envelope)


@dataclass
class Oversight:
    database: str
    nats_url: str
    issuer: str
    tokens: DemoTokens
    name: str
    # "single" (the local stack), "hub" (region NATIONAL) or "region" (the reporter only).
    installation: str = "single"
    region: str = "NATIONAL"
    app: App | None = None
    channel: grpc.aio.Channel | None = None
    stub: oversight_pb2_grpc.OversightServiceStub | None = None

    async def start(self) -> None:
        """Start (or start again, under the same consumer names: it carries on where it stopped)."""
        settings = Settings(
            service_name=self.name,
            database_url=self.database,
            nats_url=self.nats_url,
            oidc_issuer=self.issuer,
            grpc_port=0,
            consumer_batch=64,
            installation=self.installation,
            region=self.region,
            outbox_poll_seconds=0.2,
        )
        self.app = await build(settings)
        await self.app.server.start()
        await self.app.start_background()
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{self.app.port}")
        self.stub = oversight_pb2_grpc.OversightServiceStub(self.channel)

    async def stop(self) -> None:
        if self.app is None:
            return
        assert self.channel is not None
        await self.channel.close()
        await self.app.server.stop(0.5)
        await self.app.shutdown()
        self.app = None

    async def overview(
        self, username: str = "national_coordinator.national", purpose: str = PURPOSE, **request: Any
    ) -> pb.GetOverviewResponse:
        assert self.stub is not None
        metadata = [("authorization", f"Bearer {self.tokens[username]}")]
        if purpose:
            metadata.append(("x-toex-purpose", purpose))
        return await self.stub.GetOverview(pb.GetOverviewRequest(**request), metadata=metadata, timeout=30)

    def counted(self, role: str = "") -> int:
        """Events the consumers (of `role`: "report" the reporter's, "" every one) have
        processed or found duplicate since this start."""
        assert self.app is not None
        return sum(sum(c.counts.values()) for c in self.app.consumers if f"-{role}-" in c.name or not role)

    async def until(
        self, done: Callable[[pb.GetOverviewResponse], bool], wait: float = 30.0
    ) -> pb.GetOverviewResponse:
        """The overview once `done(overview)` holds (polled), or the last one after `wait` s."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while True:
            answer = await self.overview()
            if done(answer) or loop.time() > deadline:
                return answer
            await asyncio.sleep(0.2)


@pytest.fixture
async def regions(own_nats: NatsServer) -> AsyncIterator[Regions]:
    nc = await nats.connect(own_nats.url)
    js = nc.jetstream()
    for spec in STREAMS.values():
        await ensure_stream(js, spec)
    yield Regions(js)
    await nc.close()


@pytest.fixture
async def oversight(
    database: str, own_nats: NatsServer, keycloak: Any, tokens: DemoTokens
) -> AsyncIterator[Oversight]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    running = Oversight(database, own_nats.url, keycloak.issuer, tokens, f"oversight-{uuid.uuid4().hex[:8]}")
    await running.start()
    yield running
    await running.stop()
