"""What every command shares: the root options, the token, and gRPC channels per service.

A service's module declares its `Endpoint`; the root group turns that into `--<service>-addr`
(and $TOEX_<SERVICE>_ADDR), so a new service needs no change here.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import click
import grpc
from google.protobuf.message import Message
from toex_kernel.policy import PURPOSE_METADATA_KEY

from toex_cli.credentials import CredentialStore, LoginRequired, TokenSource
from toex_cli.errors import CommandFailed, rpc_failure

TLS_SCHEME = "tls://"

R = TypeVar("R", bound=Message)


@dataclass(frozen=True)
class Endpoint:
    """Where one service listens; becomes the root option `--<service>-addr`."""

    service: str
    default: str
    description: str = ""

    @property
    def param_name(self) -> str:
        return f"{self.service.replace('-', '_')}_addr"

    @property
    def envvar(self) -> str:
        return f"TOEX_{self.service.replace('-', '_').upper()}_ADDR"

    def option(self) -> click.Option:
        return click.Option(
            [f"--{self.service}-addr", self.param_name],
            default=self.default,
            envvar=self.envvar,
            show_envvar=True,
            show_default=True,
            metavar="HOST:PORT",
            help=(
                f"{self.description or f'The {self.service} service'} (host:port; tls://host:port for TLS)."
            ),
        )


@dataclass
class CliContext:
    purpose: str
    addresses: Mapping[str, str]
    timeout: float
    tokens: TokenSource
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)

    @classmethod
    def build(
        cls, *, purpose: str, addresses: Mapping[str, str], timeout: float, env_token: str | None
    ) -> CliContext:
        return cls(
            purpose=purpose,
            addresses=addresses,
            timeout=timeout,
            tokens=TokenSource(CredentialStore.default(), env_token=env_token),
        )

    def address(self, service: str) -> str:
        try:
            return self.addresses[service]
        except KeyError:
            raise click.UsageError(f"no address is configured for the {service} service") from None

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            address = self.address(service)
            if not address.startswith(TLS_SCHEME) and not is_loopback(address):
                click.echo(
                    f"Warning: your token goes to {address} unencrypted; use tls://{address} "
                    "unless the network in between is trusted",
                    err=True,
                )
            self._channels[service] = open_channel(address)
        return self._channels[service]

    def metadata(self) -> list[tuple[str, str]]:
        try:
            token = self.tokens.access_token()
        except LoginRequired as exc:
            raise CommandFailed(str(exc)) from None
        metadata = [("authorization", f"Bearer {token}")]
        if self.purpose:
            metadata.append((PURPOSE_METADATA_KEY, self.purpose))
        return metadata

    def call(
        self,
        service: str,
        method: Callable[..., R],
        request: Message,
        *,
        field_options: Mapping[str, str] | None = None,
    ) -> R:
        """One unary call with the caller's token and purpose; a failure becomes exit code 1."""
        try:
            return method(request, metadata=self.metadata(), timeout=self.timeout)
        except grpc.RpcError as exc:
            raise rpc_failure(
                exc, service=service, address=self.address(service), field_options=field_options
            ) from None

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()


def open_channel(address: str) -> grpc.Channel:
    """A channel to `address`; `tls://` verifies the server against the system's roots, or
    TOEX_TLS_CA_FILE (an installation's own CA), and presents TOEX_TLS_CERT_FILE and
    TOEX_TLS_KEY_FILE when the service requires a client certificate (mutual TLS)."""
    if address.startswith(TLS_SCHEME):
        files = {name: os.environ.get(f"TOEX_TLS_{name}_FILE", "") for name in ("CA", "CERT", "KEY")}
        try:
            pem = {name: Path(path).read_bytes() if path else None for name, path in files.items()}
        except OSError as exc:
            raise CommandFailed(
                f"cannot read a TLS file ({exc}); check TOEX_TLS_CA_FILE, TOEX_TLS_CERT_FILE and TOEX_TLS_KEY_FILE"
            ) from None
        credentials = grpc.ssl_channel_credentials(
            root_certificates=pem["CA"], private_key=pem["KEY"], certificate_chain=pem["CERT"]
        )
        return grpc.secure_channel(address.removeprefix(TLS_SCHEME), credentials)
    return grpc.insecure_channel(address)


def is_loopback(address: str) -> bool:
    host = address.removeprefix(TLS_SCHEME).rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_purpose(value: str) -> str:
    """gRPC metadata values must be printable ASCII; say so before the call rather than after."""
    purpose = " ".join(value.split())
    if purpose and not all(32 <= ord(ch) < 127 for ch in purpose):
        raise click.BadParameter("use plain ASCII letters, digits and punctuation", param_hint="--purpose")
    return purpose


pass_cli = click.make_pass_decorator(CliContext)
