"""Build the comms service from settings. Nothing connects at import time."""

from __future__ import annotations

from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex_common import grants
from toex_common.db import session_factory
from toex_common.events.bus import MessageBus
from toex_common.service import Platform, ServiceApp

from toex_comms.adapters.exports import FileExporter
from toex_comms.adapters.integration import STREAM
from toex_comms.adapters.store import ParquetDatasetStore
from toex_comms.adapters.uow import SqlCommsUnitOfWork
from toex_comms.config import Settings
from toex_comms.domain.policy import METHOD_RULES
from toex_comms.entrypoints import consumers
from toex_comms.entrypoints.grpc_api import CommsServicer
from toex_comms.service_layer import handlers

SERVICE_NAME = comms_pb2.DESCRIPTOR.services_by_name["CommsAnalysisService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps


def event_bus(settings: Settings) -> MessageBus:
    """What the service consumes: jobs, entity links, merges and splits, and job grants, when it
    consumes events."""
    bus = MessageBus()
    if settings.consume_events:
        consumers.subscribe(bus, settings.service_name)
        grants.subscribe(bus, settings.service_name)
    return bus


async def build(settings: Settings) -> App:
    bus = event_bus(settings)
    platform = await Platform.start(settings, streams=[STREAM])
    sessions = session_factory(platform.engine)

    def uow() -> SqlCommsUnitOfWork:
        return SqlCommsUnitOfWork(sessions)

    deps = handlers.Deps(
        uow=uow,
        store=ParquetDatasetStore(settings.data_dir, batch_rows=settings.import_batch_rows),
        exporter=FileExporter(),
        max_upload_bytes=settings.max_upload_bytes,
    )
    server = await platform.grpc_server(
        register=lambda s: comms_pb2_grpc.add_CommsAnalysisServiceServicer_to_server(CommsServicer(deps), s),
        service_names=[SERVICE_NAME],
        rules=METHOD_RULES,
    )
    found = bus.consumers(platform.consumer, uow)
    return App(platform, deps, server, service_names=[SERVICE_NAME], consumers=found)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"comms listening on {settings.grpc_host}:{app.port}, data in {settings.data_dir}")
