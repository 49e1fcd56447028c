"""Build the oversight service from settings. Nothing connects at import time."""

from __future__ import annotations

import functools

from toex.oversight.v1 import oversight_pb2, oversight_pb2_grpc
from toex_common.events.bus import EVERY_REGION, MessageBus
from toex_common.events.sources import SourceKeeper
from toex_common.events.streams import OVERSIGHT_STREAM
from toex_common.service import Background, Platform, ServiceApp
from toex_kernel.installation import Installation, InstallationKind

from toex_oversight.adapters.reader import PgOverviewReader
from toex_oversight.adapters.uow import PgOversightUnitOfWork
from toex_oversight.config import Settings
from toex_oversight.domain.policy import METHOD_RULES, SERVED
from toex_oversight.entrypoints import consumers, reporter
from toex_oversight.entrypoints.grpc_api import OversightServicer
from toex_oversight.service_layer import handlers

SERVICE_NAME = oversight_pb2.DESCRIPTOR.services_by_name["OversightService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps
    keeper: SourceKeeper | None = None

    def background(self) -> list[Background]:
        work = super().background()
        if self.keeper is not None:
            work.append(
                (
                    "source-keeper",
                    self.every(
                        self.settings.source_check_seconds, self.keeper.check, "checking the hub's sources"
                    ),
                )
            )
        return work


def check_installation(settings: Settings) -> Installation:
    """Any installation: a region's runs the reporter only; the hub and a single installation
    also aggregate every region's reports and answer the overview."""
    return Installation.of(settings.installation, settings.region)


def aggregates(installation: Installation) -> bool:
    """Whether the installation keeps the national read model: the hub, whose OVERSIGHT stream
    sources every region's, and a single installation, where every region reports."""
    return installation.kind is not InstallationKind.REGION


def message_buses(settings: Settings, installation: Installation) -> tuple[MessageBus, MessageBus]:
    """(the reporter's, the aggregator's): the reporter's in every installation; the
    aggregator's empty at a region."""
    reporting, aggregating = MessageBus(), MessageBus()
    if settings.consume_events:
        batch, wait = settings.consumer_batch, settings.consumer_fetch_wait_seconds
        reporter.subscribe(
            reporting,
            settings.service_name,
            batch=batch,
            fetch_wait_seconds=wait,
            direct=settings.reporter == "direct",
        )
        if aggregates(installation):
            consumers.subscribe(aggregating, settings.service_name, batch=batch, fetch_wait_seconds=wait)
    return reporting, aggregating


def message_bus(settings: Settings) -> MessageBus:
    """The aggregator's consumers (the catch-up benchmark builds them alone)."""
    return message_buses(settings, check_installation(settings))[1]


async def build(settings: Settings) -> App:
    installation = check_installation(settings)
    reporting, aggregating = message_buses(settings, installation)
    # Its own stream, OVERSIGHT, which the reporter publishes to; the streams it reads are
    # declared by each consumer exactly as their owners do, so it can start before them.
    platform = await Platform.start(settings, streams=[OVERSIGHT_STREAM])
    engine = platform.engine
    deps = handlers.Deps(reader=lambda: PgOverviewReader(engine))
    if aggregates(installation):
        server = await platform.grpc_server(
            register=lambda s: oversight_pb2_grpc.add_OversightServiceServicer_to_server(
                OversightServicer(deps), s
            ),
            service_names=[SERVICE_NAME],
            rules=METHOD_RULES,
            served=SERVED,
        )
        names = [SERVICE_NAME]
    else:
        # A region answers no overview (it holds its own region's reports only): its server
        # serves health alone.
        server = await platform.grpc_server(register=lambda s: None, service_names=[], rules={})
        names = []

    def uow() -> PgOversightUnitOfWork:
        return PgOversightUnitOfWork(engine)

    # The reporter: the installation's own events (the platform narrows the subjects to them).
    found = reporting.consumers(platform.consumer, uow)
    # The aggregator: every region's reports, at the hub (whose OVERSIGHT stream sources every
    # region's) as in a single installation.
    found += aggregating.consumers(
        functools.partial(platform.consumer, every_region=True), uow, scope=EVERY_REGION
    )
    app = App(platform, deps, server, service_names=names, consumers=found)
    if installation.kind is InstallationKind.HUB and settings.source_check_seconds > 0:
        # The hub's streams source every region's over the leaf links: keep them pulling.
        app.keeper = SourceKeeper(platform.nc, stalled_after=settings.source_stalled_seconds)
    return app


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"oversight listening on {settings.grpc_host}:{app.port}")
