"""Build the entity service from settings. Nothing connects at import time."""

from __future__ import annotations

from toex.entity.v1 import entity_pb2, entity_pb2_grpc
from toex_common import grants
from toex_common.db import session_factory
from toex_common.events.bus import MessageBus
from toex_common.service import Background, Platform, ServiceApp

from toex_entity.adapters import splink_model
from toex_entity.adapters.integration import STREAM
from toex_entity.adapters.learning_lock import EstimationLock
from toex_entity.adapters.repository import SampleKeeper
from toex_entity.adapters.uow import SqlEntityUnitOfWork
from toex_entity.config import Settings
from toex_entity.domain.matching import MatchModel
from toex_entity.domain.policy import METHOD_RULES, SERVED
from toex_entity.entrypoints import consumers, federation
from toex_entity.entrypoints.grpc_api import EntityServicer
from toex_entity.service_layer import handlers, learning

SERVICE_NAME = entity_pb2.DESCRIPTOR.services_by_name["EntityResolutionService"].full_name


class App(ServiceApp):
    settings: Settings
    deps: handlers.Deps
    # A region installation's publishing of fingerprints its consumer missed (entrypoints.federation).
    fingerprint_backfill: federation.Backfill | None = None
    # Re-estimation of the model and re-resolution under a new one (service_layer.learning).
    learner: learning.Learner | None = None

    def background(self) -> list[Background]:
        work = super().background()
        if self.learner is not None and self.settings.learning:
            every = self.every(
                self.settings.learning_interval_seconds, self.learner.run_once, "learning the model"
            )
            work.append(("model-learning", every))
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

    keeper = SampleKeeper(settings.learning_sample_cap)

    def uow() -> SqlEntityUnitOfWork:
        return SqlEntityUnitOfWork(sessions, keeper)

    deps = handlers.Deps(uow=uow)  # type: ignore[arg-type]

    async def estimate(sample_cap: int) -> tuple[MatchModel, int]:
        return await splink_model.estimate_from_database(
            settings.database_url,
            sample_cap,
            memory_limit=settings.learning_memory_limit,
            foreground=deps.foreground,
        )

    learner = learning.Learner(
        deps,
        estimate,
        learning.LearningSettings(
            min_new_records=settings.learning_min_new_records,
            growth=settings.learning_growth,
            sample_cap=settings.learning_sample_cap,
            schedule_seconds=settings.learning_schedule_seconds,
        ),
        exclusive=EstimationLock(platform.engine),
    )
    server = await platform.grpc_server(
        register=lambda s: entity_pb2_grpc.add_EntityResolutionServiceServicer_to_server(
            EntityServicer(deps, learner), s
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
    app.learner = learner
    return app


async def serve(settings: Settings) -> None:
    app = await build(settings)
    await app.serve(f"entity listening on {settings.grpc_host}:{app.port}")
