"""`python -m toex_<service> migrate|serve|seed-demo`: the commands every service has, made once.

    main = service_cli("toex_pnd", __file__, Settings, description="...", seed_help="...")

gives `migrate` (as the owning role, then the runtime role's grants), `serve` (the service's
`bootstrap.serve`; it refuses to start, saying what to set, when TOEX_INSTALLATION and
TOEX_REGION describe no installation), and with `seed_help`, `seed-demo` (the service's `demo.seed_demo(settings)`,
printing the lines it returns). A service adds commands of its own to the group it gets back.
"""

from __future__ import annotations

import asyncio
import importlib
import logging

import click
from pydantic import ValidationError

from toex_common.config import ServiceSettings
from toex_common.installation import InstallationError, installation_of
from toex_common.logging import configure_logging
from toex_common.migrations import migrate, service_migrations
from toex_common.telemetry import configure_metrics, configure_tracing


def service_cli(
    package: str,
    main_file: str,
    settings: type[ServiceSettings],
    *,
    description: str,
    serve_help: str = "Serve gRPC on TOEX_GRPC_HOST:TOEX_GRPC_PORT until SIGTERM.",
    seed_help: str | None = None,
) -> click.Group:
    name = package.removeprefix("toex_")

    @click.group(help=description)
    def main() -> None:
        pass

    @main.command(
        "migrate",
        help="Apply database migrations up to the newest, as the owning role "
        "(TOEX_MIGRATION_DATABASE_URL, else TOEX_DATABASE_URL), and grant the runtime role "
        "(TOEX_DATABASE_URL's user) its privileges.",
    )
    def migrate_command() -> None:
        config = settings()
        configure_logging(config.service_name, config.log_level)
        done = migrate(
            config.database_url, config.migration_database_url, service_migrations(package, main_file)
        )
        click.echo(f"{name} database is at the newest revision: {done}")

    @main.command("serve", help=serve_help)
    def serve_command() -> None:
        try:
            config = settings()
            installation = installation_of(config)
        except (InstallationError, ValidationError) as exc:
            raise click.ClickException(f"cannot start: {exc}") from None
        configure_logging(config.service_name, config.log_level)
        logging.getLogger(package).info(
            "installation %s serves %s",
            installation.name,
            "every region" if installation.serves_every_region else installation.region.value,
        )
        configure_tracing(config.service_name, config.otel_exporter)
        configure_metrics(config.service_name, config.otel_exporter)
        asyncio.run(importlib.import_module(f"{package}.bootstrap").serve(config))

    if seed_help is not None:

        @main.command("seed-demo", help=seed_help)
        def seed_command() -> None:
            demo = importlib.import_module(f"{package}.demo")
            for line in asyncio.run(demo.seed_demo(settings())):
                click.echo(line)

    return main
