"""`python -m toex_comms migrate|serve|seed-demo`."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click
from toex_common.logging import configure_logging
from toex_common.migrations import migrate as migrate_database
from toex_common.migrations import service_migrations
from toex_common.telemetry import configure_tracing

from toex_comms.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_comms", __file__)


@click.group(help="The toex comms analysis service: call data, phone index, watchlists, adverts, ANPR.")
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
    click.echo(f"comms database is at the newest revision: {done}")


@main.command(help="Serve gRPC on TOEX_GRPC_HOST:TOEX_GRPC_PORT until SIGTERM.")
def serve() -> None:
    from toex_comms.bootstrap import serve as run

    settings = Settings()
    configure_logging(settings.service_name, settings.log_level)
    configure_tracing(settings.service_name, settings.otel_exporter)
    asyncio.run(run(settings))


@main.command("seed-demo", help="Write demo CDR and ANPR files to import (nothing is imported).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("comms-demo"), show_default=True)
def seed_demo(out: Path) -> None:
    from toex_comms.demo import write_demo_files

    for path in write_demo_files(out):
        click.echo(f"demo file {path}")


if __name__ == "__main__":
    main()
