"""`toex installations ...`: the directory of installations the CLI sends its calls to."""

from __future__ import annotations

from typing import Any

import click
from toex_kernel.regions import Region

from toex_cli.context import CliContext, pass_cli
from toex_cli.credentials import LoginRequired, jwt_claims
from toex_cli.directory import HUB, Directory, Installation, default_path, installation_name
from toex_cli.errors import CommandFailed
from toex_cli.output import emit_list, emit_one, format_option, render_fields


def _login_region(cli: CliContext) -> Region | None:
    """The stored login's region, read offline (no refresh): for display only."""
    token = cli.tokens.env_token
    if token is None:
        try:
            stored = cli.tokens.store.load()
        except LoginRequired:
            return None
        token = stored.access_token if stored else None
    if not token:
        return None
    try:
        return Region.parse(str(jwt_claims(token).get("region") or ""))
    except ValueError:
        return None


def _home(cli: CliContext, directory: Directory) -> str:
    if directory.home:
        return f"{directory.home} (home in the file)"
    region = _login_region(cli)
    if region is not None and (serving := directory.serving(region)) is not None:
        return f"{serving.name} (serves {region.value}, your login's region)"
    if len(directory.installations) == 1:
        return f"{directory.installations[0].name} (the only one)"
    return 'unknown: log in, or set home = "NAME" in the file'


def _services(cli: CliContext, directory: Directory | None) -> list[str]:
    known = list(cli.addresses)
    extra = [s for s in (directory.services() if directory else []) if s not in known]
    return known + extra


def _given(cli: CliContext) -> dict[str, str]:
    """The services whose address was given, which take every call of theirs."""
    return {service: cli.addresses[service] for service in sorted(cli.explicit)}


def _installation_json(installation: Installation) -> dict[str, Any]:
    return {
        "name": installation.name,
        "regions": [r.value for r in installation.regions],
        "address": installation.address,
        "services": dict(installation.services),
    }


@click.group(name="installations", short_help="Which installation serves which region.")
def installations() -> None:
    """The directory of installations: which installation serves each region, and where its
    services answer. toex runs an installation per region (named by the region's code) and a
    national hub (`hub`, serving NATIONAL); with the directory, each call goes to the
    installation of the region it names.

    \b
    The directory is a TOML file, looked for in this order:
      --installations FILE, then $TOEX_INSTALLATIONS, then installations.toml in your config
      dir (TOEX_CONFIG_DIR, or the platform's user config dir + /toex) if it exists.
      `--installations none` uses no directory.

    \b
      # calls that name no region (an entity id, your inbox) go to `home`;
      # without it, to the installation serving your login's region
      home = "EMSOU"
      [installations.hub]                  # serves NATIONAL
      address = "tls://10.20.0.10:443"     # every service, unless named below
      oversight = "tls://10.20.0.10:8443"
      [installations.EMSOU]                # serves EMSOU
      tasking = "10.20.1.10:50051"
      entity = "10.20.1.10:50052"
      comms = "10.20.1.10:50054"
      [installations.demo]                 # any other name lists its regions
      regions = ["TARIAN", "SW"]
      address = "127.0.0.1:50051"

    \b
    Where a call goes, first match wins:
      1. --<service>-addr or $TOEX_<SERVICE>_ADDR, when given: every call of that service;
      2. the installation serving the region the call names (EMSOU/ID, regions/EMSOU/...,
         --region EMSOU), or the home installation for a call that names none;
      3. without a directory, the built-in address of the local stack (`make up`).

    A list of every region (`jobs list`, `referrals list|overdue`, `pnd list`, `comms datasets`,
    `entity reviews`, each with --region -) asks every installation at once, shows what
    answered, prints a line for each region whose installation did not ("LONDON: not answered
    (UNAVAILABLE: ...)") and exits with 3. When an installation answers WRONG_INSTALLATION (the
    resource is another installation's), the call is made once more at the installation it
    names if the directory lists it, with a note on standard error; otherwise the error says
    which installation to add. The directory is a file for now; the hub does not serve it.

    \b
    Examples:
      toex installations list
      toex installations show EMSOU
      toex --installations ./federation.toml --purpose "weekly return" jobs list --region -
    """


@installations.command("list")
@format_option
@pass_cli
def list_installations(cli: CliContext, output_format: str) -> None:
    """Every installation of the directory with its regions and addresses, and where calls go.

    \b
    Examples:
      toex installations list
      toex --installations ./federation.toml installations list --format json
    """
    directory = cli.directory
    given = _given(cli)
    if directory is None:
        where = cli.directory_source.path
        why = "--installations none" if where is None else f"no file at {where}"
        data: dict[str, Any] = {
            "directory": None,
            "installations": [],
            "addresses": {service: cli.addresses[service] for service in cli.addresses},
        }
        emit_list(
            output_format,
            data,
            ["service", "address", "from"],
            (
                [service, address, "given" if service in given else "default"]
                for service, address in cli.addresses.items()
            ),
        )
        if output_format != "json":
            click.echo(
                f"No installations directory ({why}): one installation answers for every region, "
                "at the addresses above.",
                err=True,
            )
        return
    data = {
        "directory": str(directory.path),
        "home": _home(cli, directory),
        "installations": [_installation_json(i) for i in directory.installations],
        "given_addresses": given,
        "regions_not_served": [r.value for r in directory.unserved()],
    }
    emit_list(
        output_format,
        data,
        ["installation", "regions", "address", "services"],
        (
            [
                i.name,
                ",".join(r.value for r in i.regions),
                i.address or "-",
                " ".join(f"{s}={a}" for s, a in sorted(i.services.items())),
            ]
            for i in directory.installations
        ),
    )
    if output_format == "json":
        return
    lines = [f"Directory: {directory.path}", f"Home (calls naming no region): {_home(cli, directory)}"]
    lines.extend(
        f"{service}: every call goes to {address} (given), not to the installations"
        for service, address in given.items()
    )
    if unserved := directory.unserved():
        lines.append("No installation serves: " + ", ".join(r.value for r in unserved))
    click.echo("\n".join(lines), err=True)


@installations.command("show")
@click.argument("name", metavar="INSTALLATION|REGION")
@format_option
@pass_cli
def show(cli: CliContext, name: str, output_format: str) -> None:
    """Where each service's calls for one installation (or the installation serving a region)
    go.

    \b
    Examples:
      toex installations show LONDON
      toex installations show hub
      toex installations show national --format json
    """
    directory = cli.directory
    if directory is None:
        where = cli.directory_source.path or "--installations none"
        raise CommandFailed(
            f"no installations directory ({where}): one installation answers for every region",
            f"create {default_path()} (see `toex installations --help`) or give --installations FILE",
        )
    installation = directory.named(name)
    if installation is None and installation_name(name) != HUB:
        try:
            installation = directory.serving(Region.parse(name))
        except ValueError:
            installation = None
    if installation is None:
        known = ", ".join(i.name for i in directory.installations)
        raise CommandFailed(
            f"{directory.path} has no installation {name!r} and none serving it",
            f"the installations are: {known}",
        )
    given = _given(cli)
    addresses: dict[str, str] = {}
    for service in _services(cli, directory):
        if service in given:
            addresses[service] = f"{given[service]} (given: it wins over the directory)"
        else:
            addresses[service] = installation.address_of(service) or "(none: add it to the file)"
    emit_one(
        output_format,
        {**_installation_json(installation), "directory": str(directory.path), "calls_go_to": addresses},
        lambda: render_fields(
            [
                ("installation", installation.name),
                ("regions", ", ".join(r.value for r in installation.regions)),
                ("directory", str(directory.path)),
                *addresses.items(),
            ]
        ),
    )


COMMANDS: list[click.Command] = [installations]
