"""Build the entity service from settings. Nothing connects at import time."""

from __future__ import annotations

import functools
from typing import Any

from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex_common.db import session_factory
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.streams import PND_STREAM, TASKING_STREAM
from toex_common.service import Platform, ServiceApp

from toex_entity.adapters.integration import STREAM
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.config import Settings
from toex_entity.domain.policy import METHOD_RULES
from toex_entity.entrypoints import consumers
from toex_entity.entrypoints.grpc_api import EntityServicer
from toex_entity.service_layer import handlers

SERVICE_NAME = entity_pb2.DESCRIPTOR.services_by_name["EntityResolutionService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps


def make_consumers(platform: Platform, uow: Any, deps: handlers.Deps) -> list[IdempotentConsumer]:
    return [
        platform.consumer(
            uow_factory=uow,
            name="entity-tasking-subjects",
            stream=TASKING_STREAM.name,
            subjects=[consumers.TASKING_SUBJECT],
            handler=functools.partial(_call, consumers.on_job_created, deps=deps),
        ),
        platform.consumer(
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
    # The producers own their streams; they are declared here too so a consumer can bind even
    # when this service starts first.
    platform = await Platform.start(
        settings, streams=[STREAM, TASKING_STREAM, PND_STREAM] if settings.consume else [STREAM]
    )
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
    )
    found = make_consumers(platform, uow, deps) if settings.consume else []
    return App(platform, deps, server, service_names=[SERVICE_NAME], consumers=found)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"entity listening on {settings.grpc_host}:{app.port}")
