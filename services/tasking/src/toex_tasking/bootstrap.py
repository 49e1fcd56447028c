"""Build the tasking service from settings. Nothing connects at import time."""

from __future__ import annotations

import logging
from datetime import timedelta

from grpc import aio
from toex.tasking.v1 import inbox_pb2, inbox_pb2_grpc, tasking_pb2, tasking_pb2_grpc
from toex_common.events.bus import MessageBus
from toex_common.grpc.audit_service import AUDIT_RULES, AUDIT_SERVED, add_audit_service
from toex_common.grpc.audit_service import SERVICE_NAME as AUDIT_SERVICE_NAME
from toex_common.service import Background, Platform, ServiceApp

from toex_tasking.adapters.directory import KeycloakDirectory
from toex_tasking.adapters.integration import STREAM
from toex_tasking.adapters.uow import PgTaskingUnitOfWork
from toex_tasking.config import Settings
from toex_tasking.domain import commands
from toex_tasking.domain.policy import METHOD_RULES, SERVED
from toex_tasking.entrypoints import consumers, inbox_consumers
from toex_tasking.entrypoints.grpc_api import TaskingServicer
from toex_tasking.entrypoints.inbox_api import InboxServicer
from toex_tasking.service_layer import handlers
from toex_tasking.service_layer.ports import UserDirectory

log = logging.getLogger(__name__)
SERVICE_NAME = tasking_pb2.DESCRIPTOR.services_by_name["TaskingService"].full_name
# The inbox is served by the same process, on the same port.
INBOX_SERVICE_NAME = inbox_pb2.DESCRIPTOR.services_by_name["InboxService"].full_name


def make_directory(settings: Settings) -> UserDirectory:
    if settings.directory == "static":
        from toex_tasking.demo import demo_directory

        return demo_directory()
    return KeycloakDirectory(settings.oidc_issuer, settings.service_client_id, settings.service_client_secret)


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps

    def background(self) -> list[Background]:
        return [
            *super().background(),
            (
                "overdue-scan",
                self.every(self.settings.overdue_scan_seconds, self._mark_overdue, "overdue scan"),
            ),
        ]

    async def _mark_overdue(self) -> None:
        marked = await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(self.deps.clock()), self.deps)
        if marked:
            log.info("marked %d jobs overdue", marked)


async def build(settings: Settings, *, directory: UserDirectory | None = None) -> App:
    # Its own stream; each consumer declares the stream it reads (safeguarding's, for the
    # referral events and job notes) exactly as its owner does, so it binds whoever starts first.
    platform = await Platform.start(settings, streams=[STREAM])
    engine = platform.engine
    deps = handlers.Deps(
        uow=lambda: PgTaskingUnitOfWork(engine),  # type: ignore[arg-type,return-value]
        directory=directory or make_directory(settings),
        reader=lambda: PgTaskingUnitOfWork(engine, read_only=True),  # type: ignore[arg-type,return-value]
        watch_poll_seconds=settings.inbox_poll_seconds,
        watch_seconds=settings.inbox_watch_seconds,
        feedback_token_ttl=timedelta(days=settings.feedback_token_days),
    )

    def register(server: aio.Server) -> None:
        tasking_pb2_grpc.add_TaskingServiceServicer_to_server(TaskingServicer(deps), server)
        inbox_pb2_grpc.add_InboxServiceServicer_to_server(InboxServicer(deps), server)
        add_audit_service(server, engine)

    names = [SERVICE_NAME, INBOX_SERVICE_NAME, AUDIT_SERVICE_NAME]
    server = await platform.grpc_server(
        register=register,
        service_names=names,
        rules={**METHOD_RULES, **AUDIT_RULES},
        served={**SERVED, **AUDIT_SERVED},
    )
    bus = MessageBus()
    # Safeguarding's referral events shown on their jobs, and the job notes asked for before them.
    consumers.subscribe(bus, settings.service_name, platform.audit, lambda: deps.clock())
    # The inbox, from tasking's own stream and those of entity, PND and safeguarding.
    inbox_consumers.subscribe(bus, settings.service_name, lambda: deps.clock())
    found = bus.consumers(platform.consumer, lambda: PgTaskingUnitOfWork(engine))
    return App(platform, deps, server, service_names=names, consumers=found)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"tasking listening on {settings.grpc_host}:{app.port}")
