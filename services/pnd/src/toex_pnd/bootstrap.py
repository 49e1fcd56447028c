"""Build the PND sync service from settings. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from grpc import aio
from grpc_health.v1._async import HealthServicer
from nats.aio.client import Client
from sqlalchemy.ext.asyncio import AsyncEngine
from toex.pnd.v1 import pnd_pb2, pnd_pb2_grpc
from toex_common.audit import PostgresAuditLog
from toex_common.auth import TokenVerifier
from toex_common.db import create_engine, session_factory
from toex_common.events import ensure_stream
from toex_common.events.nats import connect
from toex_common.events.outbox import OutboxRelay
from toex_common.grpc.interceptors import standard_interceptors
from toex_common.grpc.server import create_server, serve_until_signal
from toex_common.policy import MethodPolicy

from toex_pnd.adapters.integration import STREAM
from toex_pnd.adapters.pnd_http import HttpPndGateway
from toex_pnd.adapters.uow import SqlPndUnitOfWork
from toex_pnd.config import Settings
from toex_pnd.domain import commands
from toex_pnd.domain.policy import METHOD_RULES
from toex_pnd.entrypoints.grpc_api import PndSyncServicer
from toex_pnd.service_layer import handlers
from toex_pnd.service_layer.ports import PndGateway

log = logging.getLogger(__name__)
SERVICE_NAME = pnd_pb2.DESCRIPTOR.services_by_name["PndSyncService"].full_name


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


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
    gateway: PndGateway
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start_background(self) -> None:
        senders = max(1, self.settings.dispatch_workers)
        self.tasks = [asyncio.create_task(self.relay.run(self.stop), name="outbox-relay")]
        self.tasks += [
            asyncio.create_task(self._send(sender, senders), name=f"pnd-sender-{sender}")
            for sender in range(senders)
        ]
        if self.settings.reconcile_interval_seconds > 0:
            self.tasks.append(asyncio.create_task(self._reconcile_on_schedule(), name="reconcile"))

    async def _send(self, sender: int, senders: int) -> None:
        """Keep sending while there is work; when idle, look again after the poll interval."""
        command = commands.DispatchOnce(sender, senders, self.settings.dispatch_batch_size)
        while not self.stop.is_set():
            try:
                result = await handlers.dispatch_once(command, self.deps)
            except Exception:
                log.exception("PND sender %d failed a pass", sender)
                result = handlers.DispatchResult(failed=1)
            if result.answered and result.sent >= command.batch_size:
                continue
            await _wait(self.stop, self.settings.dispatch_poll_seconds)

    async def _reconcile_on_schedule(self) -> None:
        while not self.stop.is_set():
            await _wait(self.stop, self.settings.reconcile_interval_seconds)
            if self.stop.is_set():
                return
            try:
                report, _ = await handlers.run_reconciliation(
                    commands.RunReconciliation(requested_by="", scheduled=True), self.deps
                )
                log.info("scheduled reconciliation %s done", report.name)
            except Exception:
                log.exception("scheduled reconciliation failed")

    async def shutdown(self) -> None:
        """Stop background work (a sender finishes its pass), drain NATS, close the pool."""
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 15)
        await self.audit.stop()
        close = getattr(self.gateway, "close", None)
        if close is not None:
            await close()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.engine.dispose()


async def build(settings: Settings, *, gateway: PndGateway | None = None) -> App:
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    pnd = gateway or HttpPndGateway(
        settings.pnd_url, settings.pnd_organisation, timeout=settings.pnd_timeout_seconds
    )
    deps = handlers.Deps(
        uow=lambda: SqlPndUnitOfWork(sessions),  # type: ignore[arg-type,return-value]
        pnd=pnd,
        retry_base_seconds=settings.retry_base_seconds,
        retry_cap_seconds=settings.retry_cap_seconds,
    )
    nc = await connect(settings.nats_url, f"toex-{settings.service_name}")
    js = nc.jetstream()
    await ensure_stream(js, STREAM)
    audit = PostgresAuditLog(engine)
    await audit.start()
    verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms)
    server, port, health = await create_server(
        register=lambda s: pnd_pb2_grpc.add_PndSyncServiceServicer_to_server(PndSyncServicer(deps), s),
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
    return App(settings, engine, deps, server, port, health, nc, audit, relay, pnd)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.start_background()
    log.info("pnd sync listening on %s:%d, PND at %s", settings.grpc_host, app.port, settings.pnd_url)
    await serve_until_signal(
        app.server,
        app.health,
        service_names=[SERVICE_NAME],
        grace_seconds=settings.grpc_grace_seconds,
        on_stop=app.shutdown,
    )
