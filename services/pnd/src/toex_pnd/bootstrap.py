"""Build the PND sync service from settings. Nothing connects at import time."""

from __future__ import annotations

import logging

from toex.pnd.v1 import pnd_pb2, pnd_pb2_grpc
from toex_common import grants
from toex_common.db import session_factory
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import IdempotentConsumer
from toex_common.service import Background, GrpcServer, Platform, ServiceApp

from toex_pnd.adapters.integration import STREAM
from toex_pnd.adapters.pnd_http import HttpPndGateway
from toex_pnd.adapters.uow import SqlPndUnitOfWork
from toex_pnd.config import Settings
from toex_pnd.domain import commands
from toex_pnd.domain.policy import METHOD_RULES, SERVED
from toex_pnd.entrypoints.grpc_api import PndSyncServicer
from toex_pnd.service_layer import handlers
from toex_pnd.service_layer.ports import PndGateway

log = logging.getLogger(__name__)
SERVICE_NAME = pnd_pb2.DESCRIPTOR.services_by_name["PndSyncService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps
    # A sender finishes the pass it is in (up to a batch of PND calls) before shutdown goes on.
    shutdown_wait_seconds = 15.0

    def __init__(
        self,
        platform: Platform,
        deps: handlers.Deps,
        server: GrpcServer,
        *,
        gateway: PndGateway,
        consumers: list[IdempotentConsumer],
    ) -> None:
        super().__init__(platform, deps, server, service_names=[SERVICE_NAME], consumers=consumers)
        self.gateway = gateway

    def background(self) -> list[Background]:
        senders = max(1, self.settings.dispatch_workers)
        work = [*super().background(), *((f"pnd-sender-{n}", self._send(n, senders)) for n in range(senders))]
        if self.settings.reconcile_interval_seconds > 0:
            work.append(("reconcile", self._reconcile_on_schedule()))
        return work

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
            await self.pause(self.settings.dispatch_poll_seconds)

    async def _reconcile_on_schedule(self) -> None:
        while not self.stop.is_set():
            await self.pause(self.settings.reconcile_interval_seconds)
            if self.stop.is_set():
                return
            try:
                report, _ = await handlers.run_reconciliation(
                    commands.RunReconciliation(requested_by="", scheduled=True), self.deps
                )
                log.info("scheduled reconciliation %s done", report.name)
            except Exception:
                log.exception("scheduled reconciliation failed")

    async def close(self) -> None:
        close = getattr(self.gateway, "close", None)
        if close is not None:
            await close()


def message_bus(settings: Settings) -> MessageBus:
    """The service's consumers: the job grants kept from tasking's events."""
    bus = MessageBus()
    if settings.consume:
        grants.subscribe(bus, settings.service_name)
    return bus


async def build(settings: Settings, *, gateway: PndGateway | None = None) -> App:
    bus = message_bus(settings)
    platform = await Platform.start(settings, streams=[STREAM])
    sessions = session_factory(platform.engine)
    pnd = gateway or HttpPndGateway(
        settings.pnd_url, settings.pnd_organisation, timeout=settings.pnd_timeout_seconds
    )

    def uow() -> SqlPndUnitOfWork:
        return SqlPndUnitOfWork(sessions)

    deps = handlers.Deps(
        uow=uow,  # type: ignore[arg-type]
        pnd=pnd,
        retry_base_seconds=settings.retry_base_seconds,
        retry_cap_seconds=settings.retry_cap_seconds,
    )
    server = await platform.grpc_server(
        register=lambda s: pnd_pb2_grpc.add_PndSyncServiceServicer_to_server(PndSyncServicer(deps), s),
        service_names=[SERVICE_NAME],
        rules=METHOD_RULES,
        served=SERVED,
    )
    found = bus.consumers(platform.consumer, uow)
    return App(platform, deps, server, gateway=pnd, consumers=found)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"pnd sync listening on {settings.grpc_host}:{app.port}, PND at {settings.pnd_url}")
