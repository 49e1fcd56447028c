"""Build the entity service from settings. Nothing connects at import time."""

from __future__ import annotations

from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex_common import grants
from toex_common.db import session_factory
from toex_common.events.bus import MessageBus
from toex_common.service import Background, Platform, ServiceApp

from toex_entity.adapters.integration import STREAM
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.config import Settings
from toex_entity.domain.policy import METHOD_RULES, SERVED
from toex_entity.entrypoints import consumers, federation
from toex_entity.entrypoints.grpc_api import EntityServicer
from toex_entity.service_layer import handlers

SERVICE_NAME = entity_pb2.DESCRIPTOR.services_by_name["EntityResolutionService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps
    # A region installation's publishing of fingerprints its consumer missed (entrypoints.federation).
    fingerprint_backfill: federation.Backfill | None = None

    def background(self) -> list[Background]:
        work = super().background()
        if self.fingerprint_backfill is not None:
            every = self.every(
                self.settings.fingerprint_backfill_seconds,
                self.fingerprint_backfill.run_once,
                "publishing identifier fingerprints",
            )
            work.append(("fingerprint-backfill", every))
        return work


def message_bus(settings: Settings, deps: handlers.Deps) -> MessageBus:
    """The service's consumers: tasking's job subjects, PND results and comms datasets'
    identifiers, and the job grants kept from tasking's events."""
    bus = MessageBus()
    if settings.consume:
        consumers.subscribe(bus, deps)
        grants.subscribe(bus, settings.service_name)
    return bus


async def build(settings: Settings) -> App:
    # The consumers declare the producers' streams they read when they set up, so they can bind
    # when this service starts first.
    platform = await Platform.start(settings, streams=[STREAM, *federation.published_streams(settings)])
    sessions = session_factory(platform.engine)

    def uow() -> SqlEntityUnitOfWork:
        return SqlEntityUnitOfWork(sessions)

    deps = handlers.Deps(uow=uow)  # type: ignore[arg-type]
    server = await platform.grpc_server(
        register=lambda s: entity_pb2_grpc.add_EntityResolutionServiceServicer_to_server(
            EntityServicer(deps), s
        ),
        service_names=[SERVICE_NAME],
        rules=METHOD_RULES,
        served=SERVED,
    )
    found = message_bus(settings, deps).consumers(platform.consumer, uow)
    # Deconfliction across installations: by what the installation is.
    across = federation.wire(settings, platform, uow)  # type: ignore[arg-type]
    app = App(platform, deps, server, service_names=[SERVICE_NAME], consumers=[*found, *across.consumers])
    app.fingerprint_backfill = across.backfill
    return app


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"entity listening on {settings.grpc_host}:{app.port}")
