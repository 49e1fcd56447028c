"""`toex-devstack`: run the toex local stack on this machine (what `make up/down/status` call)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._proc import DevstackError
from .stack import Ports, Stack, fetch, find_repo_root


def _stack(ctx: click.Context) -> Stack:
    try:
        root = find_repo_root(ctx.obj["root"])
    except DevstackError as exc:
        raise click.ClickException(str(exc)) from exc
    return Stack(root, ports=ctx.obj["ports"], echo=click.echo)


@click.group(
    help="""Run the toex local stack on loopback (127.0.0.1) for development and demos.

\b
  up      start NATS (JetStream) :4222, PostgreSQL :5432, Keycloak :8080 with the
          toex realm, then every service in deploy/devstack/services.toml
          (create its database, migrate, serve, wait for gRPC health, load demo data)
  status  show each component, its pid, endpoint and whether it is up
  down    stop everything and delete the stack's data (.devstack/); the Keycloak
          download cache (~/.cache/toex/keycloak) is kept
  fetch   download the Keycloak server (~170 MB, via mvn) into the cache and
          check the other prerequisites (Java 21+, PostgreSQL binaries, nats-server)

State, data and logs live in .devstack/ at the repository root. Demo users are
<role>.<region> (e.g. researcher.emsou) with password toex-demo.
"""
)
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Repository root (default: nearest parent directory with deploy/devstack/services.toml).",
)
@click.option("--nats-port", default=4222, show_default=True, help="NATS client port.")
@click.option("--postgres-port", default=5432, show_default=True, help="PostgreSQL port.")
@click.option("--keycloak-port", default=8080, show_default=True, help="Keycloak HTTP port.")
@click.pass_context
def main(
    ctx: click.Context, root: Path | None, nats_port: int, postgres_port: int, keycloak_port: int
) -> None:
    ctx.ensure_object(dict)
    ctx.obj["root"] = root
    ctx.obj["ports"] = Ports(nats=nats_port, postgres=postgres_port, keycloak=keycloak_port)


@main.command(
    short_help="Start the stack (idempotent).",
    help="Start the stack (idempotent: what already runs is left alone).",
)
@click.pass_context
def up(ctx: click.Context) -> None:
    sys.exit(_stack(ctx).up())


@main.command(
    short_help="Stop everything and delete its data.",
    help="Stop the services, Keycloak, PostgreSQL and NATS; delete their data (logs are kept).",
)
@click.pass_context
def down(ctx: click.Context) -> None:
    sys.exit(_stack(ctx).down())


@main.command(
    short_help="Show what runs where.", help="Show each component, its pid and endpoint, up or down."
)
@click.pass_context
def status(ctx: click.Context) -> None:
    statuses = _stack(ctx).status()
    click.echo(f"{'component':<12} {'state':<6} {'pid':>8}  endpoint")
    for item in statuses:
        state = click.style("up", fg="green") if item.up else click.style("down", fg="red")
        pad = " " * (6 - (2 if item.up else 4))
        pid = str(item.pid) if item.pid else "-"
        note = f"  ({item.note})" if item.note else ""
        click.echo(f"{item.name:<12} {state}{pad} {pid:>8}  {item.endpoint}{note}")


@main.command(
    "fetch",
    short_help="Pre-fetch Keycloak; check prerequisites.",
    help="Download the Keycloak distribution into the cache and check prerequisites.",
)
def fetch_cmd() -> None:
    sys.exit(fetch(echo=click.echo))


if __name__ == "__main__":
    main()
