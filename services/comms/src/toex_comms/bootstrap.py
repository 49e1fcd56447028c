"""Build the comms service from settings. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from grpc import aio
from grpc_health.v1._async import HealthServicer
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex_common.audit import PostgresAuditLog
from toex_common.auth import TokenVerifier
from toex_common.db import create_engine, session_factory
from toex_common.events import ensure_stream
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.nats import connect
from toex_common.events.outbox import OutboxRelay
from toex_common.grpc.interceptors import standard_interceptors
from toex_common.grpc.server import create_server, serve_until_signal
from toex_common.policy import MethodPolicy

from toex_comms.adapters.integration import STREAM
from toex_comms.adapters.store import DatasetStore
from toex_comms.adapters.uow import SqlCommsUnitOfWork
from toex_comms.config import Settings
from toex_comms.domain.policy import METHOD_RULES
from toex_comms.entrypoints import consumers
from toex_comms.entrypoints.grpc_api import CommsServicer
from toex_comms.service_layer import handlers

log = logging.getLogger(__name__)
SERVICE_NAME = comms_pb2.DESCRIPTOR.services_by_name["CommsAnalysisService"].full_name


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
        """Keep trying: the stream appears when its owning service first starts."""
        while not self.stop.is_set():
            try:
                await consumer.run(self.stop)
            except Exception as exc:
                log.info("consumer %s waiting: %s", consumer.name, exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 5)

    async def shutdown(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        await self.audit.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.engine.dispose()


async def build(settings: Settings) -> App:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)

    def uow() -> SqlCommsUnitOfWork:
        return SqlCommsUnitOfWork(sessions)

    store = DatasetStore(settings.data_dir)
    deps = handlers.Deps(uow=uow, store=store, batch_rows=settings.import_batch_rows)
    nc = await connect(settings.nats_url, f"toex-{settings.service_name}")
    js = nc.jetstream()
    await ensure_stream(js, STREAM)
    audit = PostgresAuditLog(engine)
    await audit.start()
    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms)
    server, port, health = await create_server(
        register=lambda s: comms_pb2_grpc.add_CommsAnalysisServiceServicer_to_server(
            CommsServicer(deps, settings.max_upload_bytes), s
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
    found: list[IdempotentConsumer] = []
    if settings.consume_events:
        found = [
            IdempotentConsumer(
                nc=nc,
                js=js,
                uow_factory=uow,
                name="comms-jobs",
                stream=consumers.TASKING_STREAM.name,
                subjects=["toex.*.tasking.JobCreated"],
                handler=consumers.on_job_created,
            ),
            IdempotentConsumer(
                nc=nc,
                js=js,
                uow_factory=uow,
                name="comms-entities",
                stream=consumers.ENTITY_STREAM.name,
                subjects=["toex.*.entity.RecordLinked"],
                handler=consumers.on_record_linked,
            ),
        ]
    return App(settings, engine, deps, server, port, health, nc, audit, relay, found)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.start_background()
    log.info("comms listening on %s:%d, data in %s", settings.grpc_host, app.port, settings.data_dir)
    await serve_until_signal(
        app.server,
        app.health,
        service_names=[SERVICE_NAME],
        grace_seconds=settings.grpc_grace_seconds,
        on_stop=app.shutdown,
    )
