"""Build the safeguarding service from settings. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from grpc import aio
from grpc_health.v1._async import HealthServicer
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.safeguarding.v1 import safeguarding_pb2, safeguarding_pb2_grpc
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

from toex_safeguarding.adapters.integration import STREAM
from toex_safeguarding.adapters.job_notes import JobNoteRelay, NoteSender
from toex_safeguarding.adapters.tasking import ServiceToken, TaskingNotes
from toex_safeguarding.adapters.uow import SqlSafeguardingUnitOfWork
from toex_safeguarding.config import Settings
from toex_safeguarding.domain import commands
from toex_safeguarding.domain.policy import METHOD_RULES
from toex_safeguarding.entrypoints import triggers
from toex_safeguarding.entrypoints.grpc_api import SafeguardingServicer
from toex_safeguarding.service_layer import handlers

log = logging.getLogger(__name__)
SERVICE_NAME = safeguarding_pb2.DESCRIPTOR.services_by_name["SafeguardingService"].full_name


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
    notes: JobNoteRelay
    consumers: list[IdempotentConsumer]
    sender: NoteSender
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        self.tasks = [
            asyncio.create_task(self.relay.run(self.stop), name="outbox-relay"),
            asyncio.create_task(self.notes.run(self.stop), name="job-note-relay"),
            asyncio.create_task(self._scan_overdue(), name="overdue-scan"),
            *(asyncio.create_task(c.run(self.stop), name=c.name) for c in self.consumers),
        ]

    async def _scan_overdue(self) -> None:
        while not self.stop.is_set():
            try:
                raised = await handlers.escalate_overdue(
                    commands.EscalateOverdue(self.deps.clock()), self.deps
                )
                if raised:
                    log.info("escalated %d overdue clocks", raised)
            except Exception:
                log.exception("overdue scan failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), self.settings.overdue_scan_seconds)

    async def shutdown(self) -> None:
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 10)
        await self.audit.stop()
        close = getattr(self.sender, "close", None)
        if close is not None:
            await close()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.engine.dispose()


def trigger_consumers(
    settings: Settings, nc: Client, uow: object, clock: handlers.Clock = handlers.utcnow
) -> list[IdempotentConsumer]:
    js = nc.jetstream()
    handler = triggers.make_handler(clock)
    return [
        IdempotentConsumer(
            nc=nc,
            js=js,
            uow_factory=uow,  # type: ignore[arg-type]
            name=f"{settings.service_name}-comms-triggers",
            stream=triggers.COMMS_STREAM.name,
            subjects=triggers.COMMS_SUBJECTS,
            handler=handler,
        ),
        IdempotentConsumer(
            nc=nc,
            js=js,
            uow_factory=uow,  # type: ignore[arg-type]
            name=f"{settings.service_name}-job-triggers",
            stream=triggers.TASKING_STREAM.name,
            subjects=triggers.TASKING_SUBJECTS,
            handler=handler,
        ),
    ]


async def build(settings: Settings, *, sender: NoteSender | None = None) -> App:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)

    def uow() -> SqlSafeguardingUnitOfWork:
        return SqlSafeguardingUnitOfWork(sessions)

    deps = handlers.Deps(uow=uow)  # type: ignore[arg-type]
    nc = await connect(settings.nats_url, f"toex-{settings.service_name}")
    js = nc.jetstream()
    await ensure_stream(js, STREAM)
    consumers: list[IdempotentConsumer] = []
    if settings.consume_triggers:
        # The producers' streams, declared exactly as their owners declare them, so this service
        # can start (and subscribe) before they do.
        await ensure_stream(js, triggers.COMMS_STREAM)
        await ensure_stream(js, triggers.TASKING_STREAM)
        consumers = trigger_consumers(settings, nc, uow)
    audit = PostgresAuditLog(engine)
    await audit.start()
    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms)
    server, port, health = await create_server(
        register=lambda s: safeguarding_pb2_grpc.add_SafeguardingServiceServicer_to_server(
            SafeguardingServicer(deps), s
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
    sender = sender or TaskingNotes(
        settings.tasking_address,
        ServiceToken(settings.oidc_issuer, settings.service_client_id, settings.service_client_secret),
    )
    notes = JobNoteRelay(engine, sender, poll_seconds=settings.job_note_poll_seconds)
    return App(settings, engine, deps, server, port, health, nc, audit, relay, notes, consumers, sender)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.start_background()
    log.info("safeguarding listening on %s:%d", settings.grpc_host, app.port)
    await serve_until_signal(
        app.server,
        app.health,
        service_names=[SERVICE_NAME],
        grace_seconds=settings.grpc_grace_seconds,
        on_stop=app.shutdown,
    )
