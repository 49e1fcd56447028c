"""A service started in the test's own process, as the security and fault tiers run them:
migrated by the owning role, served by the runtime role, on a free port, with its background
work (relay, consumers, scans) running."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable
from typing import Any

from toex_common.migrations import migrate


async def serve_in_process(
    package: str,
    *,
    database_url: str,
    migration_database_url: str,
    nats_url: str,
    oidc_issuer: str,
    prepare: Callable[[Any], None] | None = None,
    **settings: Any,
) -> Any:
    """`package` (e.g. "toex_entity") migrated and serving gRPC on a free port (`app.port`);
    `prepare(app)` runs before its background work starts. Stop it with `stop_in_process`."""
    main = importlib.import_module(f"{package}.__main__")
    bootstrap = importlib.import_module(f"{package}.bootstrap")
    config = importlib.import_module(f"{package}.config")
    await asyncio.to_thread(migrate, database_url, migration_database_url, main.migrations_dir())
    client = package.removeprefix("toex_").replace("_", "-")
    defaults: dict[str, Any] = {
        "grpc_port": 0,
        "service_client_secret": f"toex-{client}-local-secret",
        "outbox_poll_seconds": 0.2,
    }
    app = await bootstrap.build(
        config.Settings(
            database_url=database_url,
            nats_url=nats_url,
            oidc_issuer=oidc_issuer,
            **{**defaults, **settings},
        )
    )
    if prepare is not None:
        prepare(app)
    await app.server.start()
    await app.start_background()
    return app


async def stop_in_process(app: Any) -> None:
    """Stop serving, then shut down (each piece of background work finishes what it does)."""
    await app.server.stop(1)
    await app.shutdown()
