"""`toex login`, `toex logout` and `toex whoami`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from typing import Any

import click
from toex_kernel.principal import Role

from toex_cli.context import CliContext, pass_cli
from toex_cli.credentials import (
    DEFAULT_ISSUER,
    ISSUER_ENV,
    TOKEN_ENV,
    Credentials,
    LoginRequired,
    OidcClient,
    OidcError,
    jwt_claims,
)
from toex_cli.errors import CommandFailed
from toex_cli.output import emit_one, format_option, render_fields

_KNOWN_ROLES = {role.value for role in Role}


def _login_hint(error: OidcError) -> str:
    if error.unreachable:
        return (
            f"check --issuer (or ${ISSUER_ENV}), and that Keycloak is running "
            "(`make up` starts the local stack)"
        )
    if error.error in {"invalid_client", "unauthorized_client"}:
        return (
            "this realm does not take passwords from the command line: log in with "
            f"`toex login --device`; or check --issuer (or ${ISSUER_ENV}) points at the toex realm"
        )
    if error.error == "access_denied":
        return "the login was refused in the browser; run `toex login --device` again"
    if error.error == "expired_token":
        return "the code expired before it was entered; run `toex login --device` again"
    if error.error == "invalid_grant" and "credentials" in str(error).lower():
        return "check the user name and password, then run `toex login` again"
    if error.error == "invalid_grant":
        return "the account cannot log in yet; finish its set-up in Keycloak or ask an administrator"
    return ""


@click.command()
@click.option(
    "--username", "-u", help="Your login name, for example researcher.emsou. Prompted for if left out."
)
@click.option(
    "--password-stdin",
    is_flag=True,
    help="Read the password from the first line of standard input instead of prompting.",
)
@click.option(
    "--device",
    is_flag=True,
    help="Log in in a browser (the OAuth device authorization grant): prints an address and a "
    "code to enter there, then waits. How people log in to a production realm.",
)
@click.option(
    "--issuer",
    default=DEFAULT_ISSUER,
    envvar=ISSUER_ENV,
    show_envvar=True,
    show_default=True,
    help="The Keycloak realm URL that issues toex tokens.",
)
@pass_cli
def login(cli: CliContext, username: str | None, password_stdin: bool, device: bool, issuer: str) -> None:
    """Log in to the toex realm and keep the tokens for later commands.

    With --device, prints an address and a code: open the address in any browser, log in there
    (with the realm's password policy, lock-out after repeated failures and any second factor)
    and approve; this command waits and stores the tokens. Production realms allow only this.
    Without it, uses the password grant of the public client `toex-cli` (local demos). The
    access and refresh tokens are stored in your config directory, readable by you only; later
    commands refresh the access token when it is about to expire. `toex logout` removes them.

    \b
    Examples:
      toex login --device --issuer https://keycloak.example/realms/toex
      toex login --username researcher.emsou
      printf '%s\\n' "$PASSWORD" | toex login -u researcher.emsou --password-stdin
    """
    if device:
        if username or password_stdin:
            raise click.UsageError("--device logs in in a browser: leave out --username and --password-stdin")
        _store(cli, _device_login(issuer))
        return
    if password_stdin and not username:
        raise click.UsageError("--password-stdin needs --username (standard input holds the password)")
    if not username:
        username = click.prompt("Username")
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise click.UsageError("--password-stdin was given but standard input held no password")
    else:
        password = click.prompt("Password", hide_input=True)
    assert username is not None
    try:
        credentials = OidcClient(issuer).password_grant(username.strip(), password)
    except OidcError as exc:
        message = str(exc) if exc.unreachable else f"login refused by {issuer}: {exc}"
        raise CommandFailed(message, _login_hint(exc)) from None
    _store(cli, credentials)


def _device_login(issuer: str) -> Credentials:
    oidc = OidcClient(issuer)
    try:
        started = oidc.device_authorization()
        click.echo(
            f"To log in, open {started.verification_uri} in a browser and enter the code "
            f"{started.user_code}\n(or open {started.verification_uri_complete}).\n"
            f"Waiting for you to approve (the code expires in {int(started.expires_in // 60)} minutes)...",
            err=True,
        )
        return oidc.device_token(started)
    except OidcError as exc:
        message = str(exc) if exc.unreachable else f"login refused by {issuer}: {exc}"
        raise CommandFailed(message, _login_hint(exc)) from None


def _store(cli: CliContext, credentials: Credentials) -> None:
    cli.tokens.store.save(credentials)
    summary = _describe(credentials.access_token)
    click.echo(
        f"Logged in as {credentials.username} ({summary['region'] or 'no region'}; "
        f"roles: {', '.join(summary['roles']) or 'none'})."
    )
    if cli.tokens.env_token:
        click.echo(f"Note: ${TOKEN_ENV} is set and overrides this login until you unset it.", err=True)


@click.command()
@pass_cli
def logout(cli: CliContext) -> None:
    """End your session and remove the stored tokens.

    The refresh token is also revoked at the identity provider when it can be reached.

    \b
    Example:
      toex logout
    """
    try:
        stored = cli.tokens.store.load()
    except LoginRequired:
        stored = None  # a damaged file is still removed
    if stored is not None and stored.refresh_token:
        try:
            OidcClient(stored.issuer, timeout=5.0).logout(stored.refresh_token)
        except OidcError as exc:
            click.echo(f"Warning: could not end the session at {stored.issuer}: {exc}", err=True)
    if cli.tokens.store.delete():
        click.echo(f"Logged out; removed {cli.tokens.store.path}.")
    else:
        click.echo("You were not logged in.")
    if cli.tokens.env_token:
        click.echo(f"Note: ${TOKEN_ENV} is still set and is used by later commands.", err=True)


def _describe(token: str) -> dict[str, Any]:
    try:
        claims = jwt_claims(token)
    except ValueError:
        claims = {}
    region = claims.get("region")
    if isinstance(region, list):
        region = ", ".join(str(r) for r in region)
    realm_roles = (claims.get("realm_access") or {}).get("roles") or []
    exp = claims.get("exp")
    expires = float(exp) if isinstance(exp, int | float) else None
    return {
        "username": str(claims.get("preferred_username") or claims.get("sub") or ""),
        "region": str(region or ""),
        "roles": sorted(r for r in realm_roles if r in _KNOWN_ROLES),
        "issuer": str(claims.get("iss") or ""),
        "expires_at": datetime.fromtimestamp(expires, UTC).isoformat() if expires else None,
        "expired": expires is not None and expires <= time.time(),
    }


@click.command()
@format_option
@pass_cli
def whoami(cli: CliContext, output_format: str) -> None:
    """Show who you are logged in as: user name, region and roles.

    Read from the token itself without checking its signature, so it is for display only: the
    services decide what you may do. Works offline.

    \b
    Examples:
      toex whoami
      toex whoami --format json
    """
    if cli.tokens.env_token:
        token, source = cli.tokens.env_token, f"${TOKEN_ENV}"
    else:
        try:
            stored: Credentials | None = cli.tokens.store.load()
        except LoginRequired as exc:
            raise CommandFailed(str(exc)) from None
        if stored is None:
            raise CommandFailed("you are not logged in", "run `toex login`")
        token, source = stored.access_token, str(cli.tokens.store.path)
    summary = _describe(token)
    summary["source"] = source

    def text() -> str:
        expires = summary["expires_at"] or ""
        if expires and summary["expired"]:
            expires += (
                " (expired; the next command refreshes it)" if source != f"${TOKEN_ENV}" else " (expired)"
            )
        return render_fields(
            [
                ("username", summary["username"]),
                ("region", summary["region"] or "(none: ask an administrator to set it)"),
                ("roles", ", ".join(summary["roles"]) or "(none)"),
                ("issuer", summary["issuer"]),
                ("expires", expires),
                ("token from", source),
            ]
        )

    emit_one(output_format, summary, text)


COMMANDS: list[click.Command] = [login, logout, whoami]
