"""The entity unit of work on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import text
from toex_common.events import EventEnvelope
from toex_common.uow import SqlAlchemyUnitOfWork

from toex_entity.adapters import integration
from toex_entity.adapters.federation import SqlFederationRepository
from toex_entity.adapters.relations import SqlRelationRepository
from toex_entity.adapters.repository import SqlEntityRepository

# Advisory lock key (arbitrary constant) serialising resolution writes across replicas.
RESOLUTION_LOCK = 0x7E_E7_17_01
# At the hub: serialising fingerprint matching across replicas.
MATCHING_LOCK = 0x7E_E7_17_02


class SqlEntityUnitOfWork(SqlAlchemyUnitOfWork):
    repo: SqlEntityRepository
    federation: SqlFederationRepository
    relations: SqlRelationRepository

    def _after_enter(self) -> None:
        self.repo = SqlEntityRepository(self.session)
        self.federation = SqlFederationRepository(self.session)
        self.relations = SqlRelationRepository(self.session)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)

    async def lock_resolution(self) -> None:
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RESOLUTION_LOCK})

    async def lock_matching(self) -> None:
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MATCHING_LOCK})
