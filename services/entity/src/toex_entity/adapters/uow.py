"""The entity unit of work on PostgreSQL."""

from __future__ import annotations

import orjson
from sqlalchemy import text
from toex_common.uow import SqlAlchemyUnitOfWork

from toex_entity.adapters.repository import SqlEntityRepository

# Advisory lock key (arbitrary constant) serialising resolution writes across replicas.
RESOLUTION_LOCK = 0x7E_E7_17_01
# From this many events on, the outbox rows are copied in (COPY) rather than inserted.
OUTBOX_COPY_FROM = 50
_OUTBOX_COLUMNS = ["event_id", "subject", "event_type", "payload", "headers"]


class SqlEntityUnitOfWork(SqlAlchemyUnitOfWork):
    repo: SqlEntityRepository

    def _after_enter(self) -> None:
        self.repo = SqlEntityRepository(self.session)

    async def lock_resolution(self) -> None:
        await self.session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": RESOLUTION_LOCK})

    async def commit(self) -> None:
        """As the platform's unit of work, but a bulk ingest's events (two per record) are
        copied into the outbox in the same transaction: an executemany of thousands of rows
        costs more than resolving the records."""
        if len(self._events) >= OUTBOX_COPY_FROM:
            rows = [
                (e.event_id, e.subject, e.event_type, e.payload, orjson.dumps(e.headers).decode())
                for e in self._events
            ]
            await self.repo.copy_rows("outbox", _OUTBOX_COLUMNS, rows)
            self._events.clear()
        await super().commit()
