"""The entity unit of work on PostgreSQL."""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import async_sessionmaker
from toex_common.events import EventEnvelope
from toex_common.uow import SqlAlchemyUnitOfWork

from toex_entity.adapters import integration
from toex_entity.adapters.federation import SqlFederationRepository
from toex_entity.adapters.relations import SqlRelationRepository
from toex_entity.adapters.repository import SampleKeeper, SqlEntityRepository

# Advisory lock key (arbitrary constant) serialising resolution writes across replicas.
RESOLUTION_LOCK = 0x7E_E7_17_01
# At the hub: serialising fingerprint matching across replicas.
MATCHING_LOCK = 0x7E_E7_17_02


# The person sample's keeper of each session factory (so of each database a process uses), for
# callers that do not give one (commands, benches, tests); the service gives its own, with the
# cap of its settings.
_KEEPERS: weakref.WeakKeyDictionary[Any, SampleKeeper] = weakref.WeakKeyDictionary()


# A resolution's (and a re-resolution's) queries are index lookups by blocking key, thousands of
# keys at once in a bulk chunk: the planner's cost for those passes PostgreSQL's JIT threshold,
# and compiling then took half of each lookup's time (bench/results/entity-ingest.md). The
# transaction's lock turns JIT off for the rest of the transaction, in the same round trip.
_LOCK_FOR_MATCHING = text("SELECT pg_advisory_xact_lock(:key), set_config('jit', 'off', true)")


class SqlEntityUnitOfWork(SqlAlchemyUnitOfWork):
    repo: SqlEntityRepository
    federation: SqlFederationRepository
    relations: SqlRelationRepository

    def __init__(self, sessions: async_sessionmaker[Any], sample_keeper: SampleKeeper | None = None) -> None:
        super().__init__(sessions)
        if sample_keeper is None:
            sample_keeper = _KEEPERS.setdefault(sessions, SampleKeeper())
        self.sample_keeper = sample_keeper

    def _after_enter(self) -> None:
        self.repo = SqlEntityRepository(self.session, self.sample_keeper)
        self.federation = SqlFederationRepository(self.session)
        self.relations = SqlRelationRepository(self.session)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)

    async def lock_resolution(self) -> None:
        await self.session.execute(_LOCK_FOR_MATCHING, {"key": RESOLUTION_LOCK})

    async def lock_matching(self) -> None:
        await self.session.execute(_LOCK_FOR_MATCHING, {"key": MATCHING_LOCK})
