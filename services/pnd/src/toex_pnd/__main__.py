"""`python -m toex_pnd migrate|serve|seed-demo`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from toex_common.logging import configure_logging
from toex_common.migrations import migrate as migrate_database
from toex_common.migrations import service_migrations
from toex_common.telemetry import configure_tracing

from toex_pnd.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_pnd", __file__)


@click.group(help="The toex PND sync service: keeps the Police National Database complete and current.")
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
    click.echo(f"pnd database is at the newest revision: {done}")


@main.command(help="Serve gRPC on TOEX_GRPC_HOST:TOEX_GRPC_PORT until SIGTERM; the PND at TOEX_PND_URL.")
def serve() -> None:
    from toex_pnd.bootstrap import serve as run

    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otel_exporter)
    asyncio.run(run(settings))


@main.command("seed-demo", help="Record a few demo intelligence records (safe to repeat).")
def seed_demo() -> None:
    from toex_pnd.demo import seed

    for name in asyncio.run(seed(Settings())):
        click.echo(f"demo record {name}")


if __name__ == "__main__":
    main()
