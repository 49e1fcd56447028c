"""Build the tasking service from settings. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from grpc import aio
from grpc_health.v1._async import HealthServicer
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.tasking.v1 import tasking_pb2, tasking_pb2_grpc
from toex_common.audit import PostgresAuditLog
from toex_common.auth import TokenVerifier
from toex_common.db import create_engine
from toex_common.events import ensure_stream
from toex_common.events.nats import connect
from toex_common.events.outbox import OutboxRelay
from toex_common.grpc.audit_service import AUDIT_RULES, add_audit_service
from toex_common.grpc.audit_service import SERVICE_NAME as AUDIT_SERVICE_NAME
from toex_common.grpc.interceptors import standard_interceptors
from toex_common.grpc.server import create_server, serve_until_signal
from toex_common.policy import MethodPolicy

from toex_tasking.adapters.directory import KeycloakDirectory
from toex_tasking.adapters.integration import STREAM
from toex_tasking.adapters.uow import PgTaskingUnitOfWork
from toex_tasking.config import Settings
from toex_tasking.domain import commands
from toex_tasking.domain.policy import METHOD_RULES
from toex_tasking.entrypoints.grpc_api import TaskingServicer
from toex_tasking.service_layer import handlers
from toex_tasking.service_layer.ports import UserDirectory

log = logging.getLogger(__name__)
SERVICE_NAME = tasking_pb2.DESCRIPTOR.services_by_name["TaskingService"].full_name


def make_directory(settings: Settings) -> UserDirectory:
    if settings.directory == "static":
        from toex_tasking.demo import demo_directory

        return demo_directory()
    return KeycloakDirectory(settings.oidc_issuer, settings.service_client_id, settings.service_client_secret)


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
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        self.tasks = [
            asyncio.create_task(self.relay.run(self.stop), name="outbox-relay"),
            asyncio.create_task(self._scan_overdue(), name="overdue-scan"),
        ]

    async def _scan_overdue(self) -> None:
        while not self.stop.is_set():
            try:
                marked = await handlers.mark_overdue_jobs(
                    commands.MarkOverdueJobs(self.deps.clock()), self.deps
                )
                if marked:
                    log.info("marked %d jobs overdue", marked)
            except Exception:
                log.exception("overdue scan failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.overdue_scan_seconds)

    async def shutdown(self) -> None:
        """Stop background work, let the relay finish its pass, drain NATS, close the pool."""
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        await self.audit.stop()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.engine.dispose()


async def build(settings: Settings, *, directory: UserDirectory | None = None) -> App:
    engine = create_engine(settings.database_url)
    deps = handlers.Deps(
        uow=lambda: PgTaskingUnitOfWork(engine),  # type: ignore[arg-type,return-value]
        directory=directory or make_directory(settings),
        reader=lambda: PgTaskingUnitOfWork(engine, read_only=True),  # type: ignore[arg-type,return-value]
    )
    nc = await connect(settings.nats_url, f"toex-{settings.service_name}")
    js = nc.jetstream()
    await ensure_stream(js, STREAM)
    audit = PostgresAuditLog(engine)
    await audit.start()
    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms)

    def register(server: aio.Server) -> None:
        tasking_pb2_grpc.add_TaskingServiceServicer_to_server(TaskingServicer(deps), server)
        add_audit_service(server, engine)

    server, port, health = await create_server(
        register=register,
        service_names=[SERVICE_NAME, AUDIT_SERVICE_NAME],
        interceptors=standard_interceptors(
            service=settings.service_name,
            verifier=verifier,
            policy=MethodPolicy({**METHOD_RULES, **AUDIT_RULES}),
            audit=audit,
        ),
        host=settings.grpc_host,
        port=settings.grpc_port,
    )
    relay = OutboxRelay(
        engine, js, batch_size=settings.outbox_batch_size, poll_seconds=settings.outbox_poll_seconds
    )
    return App(settings, engine, deps, server, port, health, nc, audit, relay)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.start_background()
    log.info("tasking listening on %s:%d", settings.grpc_host, app.port)
    await serve_until_signal(
        app.server,
        app.health,
        service_names=[SERVICE_NAME],
        grace_seconds=settings.grpc_grace_seconds,
        on_stop=app.shutdown,
    )
