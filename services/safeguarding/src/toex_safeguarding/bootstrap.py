"""Build the safeguarding service from settings. Nothing connects at import time."""

from __future__ import annotations

import logging

from toex.safeguarding.v1 import safeguarding_pb2, safeguarding_pb2_grpc
from toex_common import grants
from toex_common.db import session_factory
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import IdempotentConsumer
from toex_common.service import Background, GrpcServer, Platform, ServiceApp

from toex_safeguarding.adapters.integration import STREAM
from toex_safeguarding.adapters.tasking import TaskingJobs
from toex_safeguarding.adapters.uow import SqlSafeguardingUnitOfWork
from toex_safeguarding.config import Settings
from toex_safeguarding.domain import commands
from toex_safeguarding.domain.policy import METHOD_RULES, SERVED
from toex_safeguarding.entrypoints import identity, triggers
from toex_safeguarding.entrypoints.grpc_api import SafeguardingServicer
from toex_safeguarding.service_layer import handlers

log = logging.getLogger(__name__)
SERVICE_NAME = safeguarding_pb2.DESCRIPTOR.services_by_name["SafeguardingService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps

    def __init__(
        self,
        platform: Platform,
        deps: handlers.Deps,
        server: GrpcServer,
        *,
        consumers: list[IdempotentConsumer],
        tasking: TaskingJobs,
    ) -> None:
        super().__init__(platform, deps, server, service_names=[SERVICE_NAME], consumers=consumers)
        self.tasking = tasking

    def background(self) -> list[Background]:
        return [
            *super().background(),
            ("overdue-scan", self.every(self.settings.overdue_scan_seconds, self._escalate, "overdue scan")),
        ]

    async def _escalate(self) -> None:
        raised = await handlers.escalate_overdue(commands.EscalateOverdue(self.deps.clock()), self.deps)
        if raised:
            log.info("escalated %d overdue clocks", raised)

    async def close(self) -> None:
        await self.tasking.close()


def message_bus(settings: Settings, clock: handlers.Clock = handlers.utcnow) -> MessageBus:
    """The service's consumers: the triggers, the job grants kept from tasking's events, and
    entity resolution's identity changes."""
    bus = MessageBus()
    if settings.consume_triggers:
        triggers.subscribe(bus, settings.service_name, clock)
        grants.subscribe(bus, settings.service_name)
        identity.subscribe(bus, settings.service_name, clock)
    return bus


async def build(settings: Settings) -> App:
    bus = message_bus(settings)
    platform = await Platform.start(settings, streams=[STREAM])
    sessions = session_factory(platform.engine)

    def uow() -> SqlSafeguardingUnitOfWork:
        return SqlSafeguardingUnitOfWork(sessions)

    tasking = TaskingJobs(settings.tasking_address, settings=settings)
    deps = handlers.Deps(uow=uow, jobs=tasking)  # type: ignore[arg-type]
    server = await platform.grpc_server(
        register=lambda s: safeguarding_pb2_grpc.add_SafeguardingServiceServicer_to_server(
            SafeguardingServicer(deps), s
        ),
        service_names=[SERVICE_NAME],
        rules=METHOD_RULES,
        served=SERVED,
    )
    found = bus.consumers(platform.consumer, uow)
    return App(platform, deps, server, consumers=found, tasking=tasking)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"safeguarding listening on {settings.grpc_host}:{app.port}")
