"""The entity unit of work on PostgreSQL."""

from __future__ import annotations

from sqlalchemy import text
from toex_common.uow import SqlAlchemyUnitOfWork

from toex_entity.adapters.repository import SqlEntityRepository

# Advisory lock key (arbitrary constant) serialising resolution writes across replicas.
RESOLUTION_LOCK = 0x7E_E7_17_01


class SqlEntityUnitOfWork(SqlAlchemyUnitOfWork):
    repo: SqlEntityRepository

    def _after_enter(self) -> None:
        self.repo = SqlEntityRepository(self.session)

    async def lock_resolution(self) -> None:
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RESOLUTION_LOCK})
