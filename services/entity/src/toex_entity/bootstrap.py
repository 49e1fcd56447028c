"""Build the entity service from settings. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from dataclasses import dataclass, field
from typing import Any

from grpc import aio
from grpc_health.v1._async import HealthServicer
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex_common.audit import PostgresAuditLog
from toex_common.auth import TokenVerifier
from toex_common.db import create_engine, session_factory
from toex_common.events import ensure_stream
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.nats import connect
from toex_common.events.outbox import OutboxRelay
from toex_common.events.streams import StreamSpec
from toex_common.grpc.interceptors import standard_interceptors
from toex_common.grpc.server import create_server, serve_until_signal
from toex_common.policy import MethodPolicy

from toex_entity.adapters.integration import STREAM
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.config import Settings
from toex_entity.domain.policy import METHOD_RULES
from toex_entity.entrypoints import consumers
from toex_entity.entrypoints.grpc_api import EntityServicer
from toex_entity.service_layer import handlers

log = logging.getLogger(__name__)
SERVICE_NAME = entity_pb2.DESCRIPTOR.services_by_name["EntityResolutionService"].full_name
TASKING_STREAM = StreamSpec.for_domain("TASKING", "tasking")
PND_STREAM = StreamSpec.for_domain("PND", "pnd")


@dataclass
class App:
    settings: Settings
    engine: AsyncEngine
    deps: handlers.Deps
    server: aio.Server
    port: int
    health: HealthServicer
    nc: Client
    audit: PostgresAuditLog
    relay: OutboxRelay
    consumers: list[IdempotentConsumer]
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        self.tasks = [asyncio.create_task(self.relay.run(self.stop), name="outbox-relay")]
        for consumer in self.consumers:
            self.tasks.append(asyncio.create_task(self._consume(consumer), name=consumer.name))

    async def _consume(self, consumer: IdempotentConsumer) -> None:
        while not self.stop.is_set():
            try:
                await consumer.run(self.stop)
            except Exception:
                log.exception("consumer %s stopped; restarting", consumer.name)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 2.0)

    async def shutdown(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        await self.audit.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.engine.dispose()


def make_consumers(nc: Client, js: Any, uow: Any, deps: handlers.Deps) -> list[IdempotentConsumer]:
    return [
        IdempotentConsumer(
            nc=nc,
            js=js,
            uow_factory=uow,
            name="entity-tasking-subjects",
            stream=TASKING_STREAM.name,
            subjects=[consumers.TASKING_SUBJECT],
            handler=functools.partial(_call, consumers.on_job_created, deps=deps),
        ),
        IdempotentConsumer(
            nc=nc,
            js=js,
            uow_factory=uow,
            name="entity-pnd-results",
            stream=PND_STREAM.name,
            subjects=[consumers.PND_SUBJECT],
            handler=functools.partial(_call, consumers.on_pnd_result, deps=deps),
        ),
    ]


async def _call(handler: Any, event: Any, uow: Any, *, deps: handlers.Deps) -> None:
    await handler(event, uow, deps)


async def build(settings: Settings) -> App:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)

    def uow() -> SqlEntityUnitOfWork:
        return SqlEntityUnitOfWork(sessions)

    deps = handlers.Deps(uow=uow)  # type: ignore[arg-type]
    nc = await connect(settings.nats_url, f"toex-{settings.service_name}")
    js = nc.jetstream()
    await ensure_stream(js, STREAM)
    found: list[IdempotentConsumer] = []
    if settings.consume:
        # The producers own their streams; make sure they exist so a consumer can bind even
        # when this service starts first.
        await ensure_stream(js, TASKING_STREAM)
        await ensure_stream(js, PND_STREAM)
        found = make_consumers(nc, js, uow, deps)
    audit = PostgresAuditLog(engine)
    await audit.start()
    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms)
    server, port, health = await create_server(
        register=lambda s: entity_pb2_grpc.add_EntityResolutionServiceServicer_to_server(
            EntityServicer(deps), s
        ),
        service_names=[SERVICE_NAME],
        interceptors=standard_interceptors(
            service=settings.service_name, verifier=verifier, policy=MethodPolicy(METHOD_RULES), audit=audit
        ),
        host=settings.grpc_host,
        port=settings.grpc_port,
    )
    relay = OutboxRelay(
        engine, js, batch_size=settings.outbox_batch_size, poll_seconds=settings.outbox_poll_seconds
    )
    return App(settings, engine, deps, server, port, health, nc, audit, relay, found)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.start_background()
    log.info("entity listening on %s:%d", settings.grpc_host, app.port)
    await serve_until_signal(
        app.server,
        app.health,
        service_names=[SERVICE_NAME],
        grace_seconds=settings.grpc_grace_seconds,
        on_stop=app.shutdown,
    )
