"""`python -m toex_comms migrate|serve|seed-demo`."""

from __future__ import annotations

from pathlib import Path

import click
from toex_common.migrations import service_migrations
from toex_common.service_cli import service_cli

from toex_comms.config import Settings


def migrations_dir() -> Path:
    return service_migrations("toex_comms", __file__)


main = service_cli(
    "toex_comms",
    __file__,
    Settings,
    description="The toex comms analysis service: call data, phone index, watchlists, adverts, ANPR.",
)


@main.command("seed-demo", help="Write demo CDR and ANPR files to import (nothing is imported).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("comms-demo"), show_default=True)
def seed_demo(out: Path) -> None:
    from toex_comms.demo import write_demo_files

    for path in write_demo_files(out):
        click.echo(f"demo file {path}")


if __name__ == "__main__":
    main()
