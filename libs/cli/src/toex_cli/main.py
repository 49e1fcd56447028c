"""`toex`: one entry point, one subcommand group per service.

A new service adds one module that defines `COMMANDS` (its click group) and, when it is reached
over gRPC, `ENDPOINTS` (which become the root options `--<service>-addr`), and lists the
module in `MODULES` below.
"""

from __future__ import annotations

import os
from types import ModuleType

import click

from toex_cli import (
    auth_commands,
    comms,
    entity,
    events,
    inbox,
    installations,
    jobs,
    national,
    pack,
    pnd,
    safeguarding,
)
from toex_cli.context import CliContext, check_purpose
from toex_cli.credentials import TOKEN_ENV
from toex_cli.directory import ENVVAR as INSTALLATIONS_ENV
from toex_cli.directory import DirectorySource

MODULES: tuple[ModuleType, ...] = (
    auth_commands,
    jobs,
    inbox,
    events,
    comms,
    safeguarding,
    pnd,
    entity,
    national,
    pack,
    installations,
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110},
    epilog=(
        "Exit codes: 0 done; 1 refused by a server (or it could not be reached, or you are not "
        "logged in); 2 the command line was wrong; 3 a partial answer (a list of every region "
        "missing the installations named on standard error). Run `toex COMMAND --help` for examples."
    ),
)
@click.option(
    "--purpose",
    default="",
    envvar="TOEX_PURPOSE",
    show_envvar=True,
    metavar="TEXT",
    help='Why you are reading (an operation name or job reference, e.g. "Op Kestrel"). '
    "Sent with every call and written to the audit log; reads without one are refused. "
    "A command given --job EMSOU/ID has the job as its purpose unless this is given: "
    "that is how a job's assignee from another region reaches the job's material.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    envvar="TOEX_TIMEOUT",
    help="Seconds to wait for each server answer.",
)
@click.option(
    "--installations",
    "installations_file",
    metavar="FILE",
    envvar=INSTALLATIONS_ENV,
    show_envvar=True,
    help="The directory of installations (which installation serves which region; see "
    "`toex installations --help`). Default: installations.toml in your config dir, if it "
    "exists; `none` for no directory.",
)
@click.version_option(package_name="toex-cli", prog_name="toex")
@click.pass_context
def main(
    ctx: click.Context, purpose: str, timeout: float, installations_file: str | None, **addresses: str
) -> None:
    """toex: the organised-exploitation intelligence platform from the command line.

    Log in once with `toex login`; later commands use and refresh the stored token (scripts may
    set TOEX_TOKEN instead). Reads must say why: toex --purpose "Op NAME" ...

    One installation (the local stack) answers for every region unless a directory of
    installations says otherwise; with one, each call goes to the installation of the region
    it names, and a list of every region (--region -) asks them all. A service's address given
    with --<service>-addr or its variable wins over the directory. See `toex installations --help`.

    \b
    Examples:
      toex login --username researcher.emsou
      toex --purpose "Op Kestrel" jobs list --region EMSOU
      toex events tail --stream TASKING --region EMSOU
    """
    endpoints = [endpoint for module in MODULES for endpoint in getattr(module, "ENDPOINTS", ())]
    given = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    cli = CliContext.build(
        purpose=check_purpose(purpose),
        addresses={endpoint.service: addresses[endpoint.param_name] for endpoint in endpoints},
        timeout=timeout,
        env_token=os.environ.get(TOKEN_ENV, "").strip() or None,
        explicit=frozenset(
            endpoint.service
            for endpoint in endpoints
            if ctx.get_parameter_source(endpoint.param_name) in given
        ),
        directory=DirectorySource.from_option(installations_file),
        fixed={endpoint.service: endpoint.installation for endpoint in endpoints if endpoint.installation},
    )
    ctx.obj = cli
    ctx.call_on_close(cli.close)


for _module in MODULES:
    for _endpoint in getattr(_module, "ENDPOINTS", ()):
        main.params.append(_endpoint.option())
    for _command in _module.COMMANDS:
        main.add_command(_command)
