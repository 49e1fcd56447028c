"""`toex-devstack`: run the toex local stack on this machine (what `make up/down/status` call)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ._proc import DevstackError
from .federation import Federation
from .stack import ComponentStatus, Ports, Stack, fetch, find_repo_root


def _root(ctx: click.Context) -> Path:
    try:
        return find_repo_root(ctx.obj["root"])
    except DevstackError as exc:
        raise click.ClickException(str(exc)) from exc


def _stack(ctx: click.Context) -> Stack:
    return Stack(_root(ctx), ports=ctx.obj["ports"], echo=click.echo)


def _federation(ctx: click.Context) -> Federation:
    return Federation(_root(ctx), echo=click.echo)


@click.group(
    help="""Run the toex local stack on loopback (127.0.0.1) for development and demos.

\b
  up      start NATS (JetStream) :4222, PostgreSQL :5432, Keycloak :8080 with the
          toex realm, then every service in deploy/devstack/services.toml
          (create its database, migrate, serve, wait for gRPC health, load demo data)
  up-federation
          start the national hub and the EMSOU and LONDON installations instead:
          three nats-servers joined as leaf nodes, one PostgreSQL :5432, one
          Keycloak :8080, each installation's services on its own ports
          (hub 51xxx, EMSOU 52xxx, LONDON 53xxx); no demo data
  status  show each component, its pid, endpoint and whether it is up
  down    stop everything (the stack or the federation) and delete its data
          (.devstack/); the Keycloak download cache (~/.cache/toex/keycloak) is kept
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
    "up-federation",
    short_help="Start a hub and two regions (idempotent).",
    help="""Start the national hub and the EMSOU and LONDON region installations on loopback
(idempotent): the generated NATS configurations joined as leaf nodes with the stream jobs,
one PostgreSQL, one Keycloak, each installation's services with TOEX_INSTALLATION and
TOEX_REGION; writes the CLI's directory of installations (.devstack/federation/installations.toml).""",
)
@click.option(
    "--keycloak-url",
    default=None,
    metavar="URL",
    help="Use the Keycloak (with the toex realm) running at URL, e.g. http://127.0.0.1:8080, "
    "instead of starting one.",
)
@click.pass_context
def up_federation(ctx: click.Context, keycloak_url: str | None) -> None:
    sys.exit(Federation(_root(ctx), keycloak_url=keycloak_url, echo=click.echo).up())


@main.command(
    short_help="Stop everything and delete its data.",
    help="Stop the services, Keycloak, PostgreSQL and NATS of the local stack or the local federation "
    "(whichever runs); delete their data (logs are kept).",
)
@click.pass_context
def down(ctx: click.Context) -> None:
    federation = _federation(ctx)
    stack = _stack(ctx)
    if federation.state_file.exists():
        code = federation.down()
        if stack.state_file.exists():
            code = stack.down() or code
        sys.exit(code)
    sys.exit(stack.down())


def _print_status(statuses: list[ComponentStatus]) -> None:
    width = max([12, *(len(item.name) for item in statuses)])
    click.echo(f"{'component':<{width}} {'state':<6} {'pid':>8}  endpoint")
    for item in statuses:
        state = click.style("up", fg="green") if item.up else click.style("down", fg="red")
        pad = " " * (6 - (2 if item.up else 4))
        pid = str(item.pid) if item.pid else "-"
        note = f"  ({item.note})" if item.note else ""
        click.echo(f"{item.name:<{width}} {state}{pad} {pid:>8}  {item.endpoint}{note}")


@main.command(
    short_help="Show what runs where.",
    help="Show each component, its pid and endpoint, up or down (of the local federation instead, "
    "when that is what runs).",
)
@click.pass_context
def status(ctx: click.Context) -> None:
    federation = _federation(ctx)
    if federation.state_file.exists() and not _stack(ctx).state_file.exists():
        click.echo("The local federation (make up-federation):")
        _print_status(federation.status())
        return
    _print_status(_stack(ctx).status())


@main.command(
    "fetch",
    short_help="Pre-fetch Keycloak; check prerequisites.",
    help="Download the Keycloak distribution into the cache and check prerequisites.",
)
def fetch_cmd() -> None:
    sys.exit(fetch(echo=click.echo))


if __name__ == "__main__":
    main()
