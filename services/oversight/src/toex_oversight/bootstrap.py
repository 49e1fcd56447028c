"""Build the oversight service from settings. Nothing connects at import time."""

from __future__ import annotations

import functools

from toex.oversight.v1 import oversight_pb2, oversight_pb2_grpc
from toex_common.events.bus import EVERY_REGION, MessageBus
from toex_common.service import Platform, ServiceApp
from toex_kernel.installation import Installation, InstallationError, InstallationKind

from toex_oversight.adapters.reader import PgOverviewReader
from toex_oversight.adapters.uow import PgOversightUnitOfWork
from toex_oversight.config import Settings
from toex_oversight.domain.policy import METHOD_RULES, SERVED
from toex_oversight.entrypoints import consumers
from toex_oversight.entrypoints.grpc_api import OversightServicer
from toex_oversight.service_layer import handlers

SERVICE_NAME = oversight_pb2.DESCRIPTOR.services_by_name["OversightService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps


def check_installation(settings: Settings) -> Installation:
    """The hub, or a single installation: where every region's events arrive."""
    installation = Installation.of(settings.installation, settings.region)
    if installation.kind is InstallationKind.REGION:
        raise InstallationError(
            f"national oversight runs at the hub (TOEX_INSTALLATION=hub) or in a single installation; "
            f"this is the {installation.region.value} installation, which holds its own region's events only"
        )
    return installation


def message_bus(settings: Settings) -> MessageBus:
    bus = MessageBus()
    if settings.consume_events:
        consumers.subscribe(
            bus,
            settings.service_name,
            batch=settings.consumer_batch,
            fetch_wait_seconds=settings.consumer_fetch_wait_seconds,
        )
    return bus


async def build(settings: Settings) -> App:
    check_installation(settings)
    bus = message_bus(settings)
    # No stream of its own: it only reads the other services' (each consumer declares the
    # stream it reads exactly as its owner does, so it can start before them).
    platform = await Platform.start(settings, streams=[])
    engine = platform.engine
    deps = handlers.Deps(reader=lambda: PgOverviewReader(engine))
    server = await platform.grpc_server(
        register=lambda s: oversight_pb2_grpc.add_OversightServiceServicer_to_server(
            OversightServicer(deps), s
        ),
        service_names=[SERVICE_NAME],
        rules=METHOD_RULES,
        served=SERVED,
    )
    # Every region's subjects, at the hub (whose streams source every region's) as in a single
    # installation: the platform would otherwise narrow them to the installation's own region.
    found = bus.consumers(
        functools.partial(platform.consumer, every_region=True),
        lambda: PgOversightUnitOfWork(engine),
        scope=EVERY_REGION,
    )
    return App(platform, deps, server, service_names=[SERVICE_NAME], consumers=found)


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"oversight listening on {settings.grpc_host}:{app.port}")
