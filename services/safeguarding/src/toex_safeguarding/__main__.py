"""`python -m toex_safeguarding migrate|serve|seed-demo`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from toex_common.logging import configure_logging
from toex_common.migrations import migrate as migrate_database
from toex_common.migrations import service_migrations
from toex_common.telemetry import configure_tracing

from toex_safeguarding.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_safeguarding", __file__)


@click.group(help="The toex safeguarding service: referrals of potential victims, on statutory time.")
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
    click.echo(f"safeguarding database is at the newest revision: {done}")


@main.command(help="Serve gRPC on TOEX_GRPC_HOST:TOEX_GRPC_PORT until SIGTERM.")
def serve() -> None:
    from toex_safeguarding.bootstrap import serve as run

    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otel_exporter)
    asyncio.run(run(settings))


@main.command("seed-demo", help="Draft a demo referral for EMSOU (safe to repeat).")
def seed_demo() -> None:
    from toex_common.db import create_engine, session_factory

    from toex_safeguarding.adapters.uow import SqlSafeguardingUnitOfWork
    from toex_safeguarding.demo import seed
    from toex_safeguarding.service_layer.handlers import Deps

    settings = Settings()

    async def run() -> list[str]:
        engine = create_engine(settings.database_url, pool_size=2)
        sessions = session_factory(engine)
        try:
            return await seed(Deps(uow=lambda: SqlSafeguardingUnitOfWork(sessions)))  # type: ignore[arg-type,return-value]
        finally:
            await engine.dispose()

    for name in asyncio.run(run()):
        click.echo(f"demo referral {name}")


if __name__ == "__main__":
    main()
