"""At most one re-estimation of the model at a time, across every replica of the service."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

# Advisory lock key (arbitrary constant; the resolution and matching locks are ...01 and ...02).
ESTIMATION_LOCK = 0x7E_E7_17_03


class EstimationLock:
    """A session-level advisory lock, taken without waiting and held on a connection of its own
    for the whole estimate (no transaction stays open meanwhile). It goes with its connection if
    the process dies, so a crashed replica never blocks the next estimate. Resolution never
    takes it."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[bool]:
        """Yields True if this caller now holds the lock, False if another holds it."""
        async with self.engine.connect() as conn:
            got = bool(
                (
                    await conn.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": ESTIMATION_LOCK})
                ).scalar_one()
            )
            await conn.commit()
            try:
                yield got
            finally:
                if got:
                    await conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": ESTIMATION_LOCK})
                    await conn.commit()

    async def held(self) -> bool:
        """Whether any replica is estimating now."""
        async with self.engine.connect() as conn:
            row = await conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted "
                    "AND classid = 0 AND objid = :key AND objsubid = 1 "
                    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))"
                ),
                {"key": ESTIMATION_LOCK},
            )
            return bool(row.scalar_one())
