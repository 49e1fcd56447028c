"""python -m toex_console serve: the console on http_host:http_port."""

from __future__ import annotations

import click
import uvicorn

from toex_console.app import create_app
from toex_console.config import Settings


@click.group()
def main() -> None:
    """toex web console."""


@main.command()
def serve() -> None:
    """Serve the console (settings from TOEX_* in the environment)."""
    settings = Settings()
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_level="info",
        access_log=settings.access_log,
    )


@main.command()
def migrate() -> None:
    """Nothing to migrate: the console keeps no data of its own."""


if __name__ == "__main__":
    main()
