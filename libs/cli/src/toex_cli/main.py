"""`toex`: one entry point, one subcommand group per service."""

from __future__ import annotations

import click


@click.group(help="toex: organised-exploitation intelligence platform command line.")
def main() -> None:
    pass
