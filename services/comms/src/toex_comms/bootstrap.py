"""Build the comms service from settings. Nothing connects at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from toex.comms.v1 import comms_pb2, comms_pb2_grpc
from toex_common import grants
from toex_common.db import session_factory
from toex_common.events.bus import MessageBus
from toex_common.service import Background, Platform, ServiceApp

from toex_comms.adapters.exports import FileExporter
from toex_comms.adapters.integration import STREAM
from toex_comms.adapters.store import ParquetDatasetStore
from toex_comms.adapters.uow import SqlCommsUnitOfWork
from toex_comms.config import Settings
from toex_comms.domain.policy import METHOD_RULES, SERVED
from toex_comms.entrypoints import consumers
from toex_comms.entrypoints.grpc_api import CommsServicer
from toex_comms.service_layer import handlers
from toex_comms.service_layer.ports import CommsUnitOfWork

log = logging.getLogger(__name__)
SERVICE_NAME = comms_pb2.DESCRIPTOR.services_by_name["CommsAnalysisService"].full_name
# How often the data directory is swept again while the service runs (after the sweep at start).
SWEEP_EVERY_SECONDS = 3600.0
LISTING_PAGE = 10_000


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps
    # The data directory (set by `build`), swept of what killed imports left.
    store: ParquetDatasetStore

    def background(self) -> list[Background]:
        async def sweep() -> None:
            await sweep_data_dir(self.store, self.deps.uow)

        return [
            *super().background(),
            ("data-sweep", self._after_first(SWEEP_EVERY_SECONDS, sweep, "sweeping the data directory")),
        ]


async def _listed_datasets(uow: Callable[[], CommsUnitOfWork]) -> set[str]:
    """The ids of every dataset the database holds."""
    listed: set[str] = set()
    after: tuple[datetime, str] | None = None
    async with uow() as u:
        while True:
            page = await u.repo.list_datasets(None, "", None, LISTING_PAGE, after)
            listed.update(d.id for d in page)
            if len(page) < LISTING_PAGE:
                return listed
            after = (page[-1].created_at, page[-1].id)


async def sweep_data_dir(
    store: ParquetDatasetStore, uow: Callable[[], CommsUnitOfWork], *, at_start: bool = False
) -> None:
    """Remove what imports killed midway left in the data directory: partial uploads and
    staged parts (ParquetDatasetStore.sweep), and datasets published by an import killed before
    its commit, which the database does not list (checked only for those untouched long enough
    that no import can still be committing them)."""
    removed = await asyncio.to_thread(store.sweep, at_start=at_start)
    untouched = await asyncio.to_thread(store.untouched_datasets)
    if untouched:
        listed = await _listed_datasets(uow)
        removed += await asyncio.to_thread(store.remove_unlisted, [i for i in untouched if i not in listed])
    if removed:
        log.info(
            "removed %d files or directories interrupted imports left in %s: %s",
            len(removed),
            store.root,
            ", ".join(str(p.relative_to(store.root)) for p in removed[:20]),
        )


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

    store = ParquetDatasetStore(
        settings.data_dir,
        batch_rows=settings.import_batch_rows,
        abandoned_after=settings.abandoned_files_seconds,
    )
    # Before serving: what this process's earlier life left (killed mid-import) goes now. A
    # sweep that fails is only housekeeping missed: the service starts all the same.
    try:
        await sweep_data_dir(store, uow, at_start=True)
    except Exception:
        log.exception("sweeping the data directory %s at start failed", settings.data_dir)
    deps = handlers.Deps(
        uow=uow,
        store=store,
        exporter=FileExporter(),
        max_upload_bytes=settings.max_upload_bytes,
    )
    server = await platform.grpc_server(
        register=lambda s: comms_pb2_grpc.add_CommsAnalysisServiceServicer_to_server(CommsServicer(deps), s),
        service_names=[SERVICE_NAME],
        rules=METHOD_RULES,
        served=SERVED,
    )
    found = bus.consumers(platform.consumer, uow)
    app = App(platform, deps, server, service_names=[SERVICE_NAME], consumers=found)
    app.store = store
    return app


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"comms listening on {settings.grpc_host}:{app.port}, data in {settings.data_dir}")
