"""`toex-deploycheck [nats|compose|dockerfiles|helm ...]`: the deployment checks of `make test`."""

from __future__ import annotations

import sys
import time

import click

from toex_deploycheck.checks import ensure_helm, run_all

CHECKS = ("nats", "compose", "dockerfiles", "helm")


@click.command(help=__doc__)
@click.argument("checks", nargs=-1, type=click.Choice([*CHECKS, "ensure-helm"]))
@click.option("-v", "--verbose", is_flag=True, help="Also print what each check looked at.")
def main(checks: tuple[str, ...], verbose: bool) -> None:
    if checks == ("ensure-helm",):
        click.echo(ensure_helm())
        return
    started = time.monotonic()
    failed = 0
    for report in run_all(checks or CHECKS):
        mark = "ok  " if report.ok else "FAIL"
        click.echo(f"{mark} {report.name}")
        for note in report.notes:
            if verbose or note.startswith("WARNING"):
                click.echo(f"       {note}")
        for problem in report.problems:
            click.echo("       " + problem.replace("\n", "\n       "))
        failed += not report.ok
    click.echo(f"deployment checks: {failed} failed in {time.monotonic() - started:.1f} s")
    sys.exit(1 if failed else 0)
