"""`python -m toex_tasking migrate|serve|seed-demo`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from toex_common.logging import configure_logging
from toex_common.migrations import migrate as migrate_database
from toex_common.migrations import service_migrations
from toex_common.telemetry import configure_tracing

from toex_tasking.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_tasking", __file__)


@click.group(help="The toex tasking service: intelligence jobs, their lifecycle and events.")
def main() -> None:
    pass


@main.command(
    help="Apply database migrations up to the newest, as the owning role (TOEX_MIGRATION_DATABASE_URL, "
    "else TOEX_DATABASE_URL), and grant the runtime role (TOEX_DATABASE_URL's user) its privileges."
)
def migrate() -> None:
    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    done = migrate_database(settings.database_url, settings.migration_database_url, migrations_dir())
    click.echo(f"tasking database is at the newest revision: {done}")


@main.command(help="Serve gRPC on TOEX_GRPC_HOST:TOEX_GRPC_PORT until SIGTERM.")
def serve() -> None:
    from toex_tasking.bootstrap import serve as run

    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otel_exporter)
    asyncio.run(run(settings))


@main.command("seed-demo", help="Raise a few demo jobs (safe to repeat).")
def seed_demo() -> None:
    from toex_common.db import create_engine

    from toex_tasking.adapters.uow import PgTaskingUnitOfWork
    from toex_tasking.demo import demo_directory, seed
    from toex_tasking.service_layer.handlers import Deps

    settings = Settings()

    async def run() -> list[str]:
        engine = create_engine(settings.database_url, pool_size=2)
        try:
            return await seed(Deps(uow=lambda: PgTaskingUnitOfWork(engine), directory=demo_directory()))  # type: ignore[arg-type,return-value]
        finally:
            await engine.dispose()

    for name in asyncio.run(run()):
        click.echo(f"demo job {name}")


if __name__ == "__main__":
    main()
