"""Fixtures shared by libs/common's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from toex_common.db import create_engine, platform_metadata
from toex_common.events.nats import connect


@pytest.fixture
async def engine(database: str) -> AsyncIterator[Any]:
    """An engine on a fresh database holding the platform tables (outbox, inbox, audit log...)."""
    engine = create_engine(database, pool_size=5)
    async with engine.begin() as conn:
        await conn.run_sync(platform_metadata.create_all)
    yield engine
    await engine.dispose()


@pytest.fixture
async def nc(nats_server: Any) -> AsyncIterator[Client]:
    """A NATS client of the shared test server."""
    client = await connect(nats_server.url, "test")
    yield client
    await client.close()
