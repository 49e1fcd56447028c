"""What every command shares: the root options, the token, and gRPC channels per service.

A service's module declares its `Endpoint`; the root group turns that into `--<service>-addr`
(and $TOEX_<SERVICE>_ADDR), so a new service needs no change here.

Where a call goes, first match wins: the service's address when given (--<service>-addr or
$TOEX_<SERVICE>_ADDR); else, with a directory of installations (toex_cli.directory), the
installation serving the region the request names (toex_cli.routing); else the built-in
default address (the local stack, `make up`).
"""

from __future__ import annotations

import ipaddress
import os
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Generic, TypeVar

import click
import grpc
from google.protobuf.message import Message
from toex_kernel.policy import PURPOSE_METADATA_KEY
from toex_kernel.regions import Region

from toex_cli.credentials import CredentialStore, LoginRequired, TokenSource, jwt_claims
from toex_cli.directory import Directory, DirectoryError, DirectorySource, Installation, Route
from toex_cli.errors import CommandFailed, WrongInstallation, rpc_failure
from toex_cli.routing import PINNED, RoutedChannel

TLS_SCHEME = "tls://"
PARTIAL_EXIT_CODE = 3
# Installations asked at once for an every-region list (there are eleven regions).
MAX_PARALLEL_INSTALLATIONS = 12
# Codes meaning the installation never answered (rather than answered no).
NOT_ANSWERED = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"})

R = TypeVar("R", bound=Message)
T = TypeVar("T")


@dataclass(frozen=True)
class Endpoint:
    """Where one service listens; becomes the root option `--<service>-addr`. A service that
    runs at one installation only (the hub's `oversight`) names it in `installation`: with a
    directory, its calls go there whatever region they name."""

    service: str
    default: str
    description: str = ""
    installation: str = ""

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
                f"{self.description or f'The {self.service} service'} (host:port; tls://host:port for TLS). "
                "Given here or in the environment, it takes every call of the service, whatever "
                "the installations directory says."
            ),
        )


@dataclass
class CliContext:
    purpose: str
    addresses: Mapping[str, str]
    timeout: float
    tokens: TokenSource
    # Services whose address was given (--<service>-addr or $TOEX_<SERVICE>_ADDR): every call of
    # theirs goes there, whatever the directory says.
    explicit: frozenset[str] = frozenset()
    # Services that run at one installation only (Endpoint.installation), by service.
    fixed: Mapping[str, str] = field(default_factory=dict)
    directory_source: DirectorySource = field(default_factory=lambda: DirectorySource(None))
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    _by_address: dict[str, grpc.Channel] = field(default_factory=dict)
    _directory: list[Directory | None] = field(default_factory=list)  # [] until loaded
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(
        cls,
        *,
        purpose: str,
        addresses: Mapping[str, str],
        timeout: float,
        env_token: str | None,
        explicit: frozenset[str] = frozenset(),
        directory: DirectorySource | None = None,
        fixed: Mapping[str, str] | None = None,
    ) -> CliContext:
        return cls(
            purpose=purpose,
            addresses=addresses,
            timeout=timeout,
            tokens=TokenSource(CredentialStore.default(), env_token=env_token),
            explicit=explicit,
            fixed=fixed or {},
            directory_source=directory or DirectorySource(None),
        )

    @property
    def directory(self) -> Directory | None:
        """The installations directory in use, read on first need; None without one."""
        if not self._directory:
            try:
                self._directory.append(self.directory_source.load())
            except DirectoryError as exc:
                raise CommandFailed(
                    str(exc),
                    "correct the file (`toex installations --help` shows its form), or run with "
                    "--installations none to use the --<service>-addr options alone",
                ) from None
        return self._directory[0]

    def routes(self, service: str) -> bool:
        """Whether the directory chooses where `service`'s calls go (it has no address given)."""
        return service not in self.explicit and self.directory is not None

    def address(self, service: str) -> str:
        if service in self.addresses and self.routes(service):
            assert self.directory is not None
            return f"the installation the directory {self.directory.path} names"
        try:
            return self.addresses[service]
        except KeyError:
            raise click.UsageError(f"no address is configured for the {service} service") from None

    def channel(self, service: str) -> grpc.Channel:
        if service not in self._channels:
            if self.routes(service):
                self._channels[service] = RoutedChannel(self, service)
                return self._channels[service]
            address = self.address(service)
            _warn_unless_protected(address)
            self._channels[service] = open_channel(address)
        return self._channels[service]

    # The router a RoutedChannel asks (toex_cli.routing.Router).

    def open(self, address: str) -> grpc.Channel:
        """One channel per installation address, shared by the services answering there."""
        with self._lock:
            if address not in self._by_address:
                _warn_unless_protected(address)
                self._by_address[address] = open_channel(address)
            return self._by_address[address]

    def route(self, service: str, region: Region | None) -> Route:
        directory = self._routing_directory()
        if service in self.fixed:
            return self.route_to(service, self._fixed_installation(service))
        if region is None:
            return self.route_to(service, self.home_installation())
        installation = directory.serving(region)
        if installation is None:
            raise CommandFailed(
                f"no installation in {directory.path} serves {region.value}",
                f'add [installations.{region.value}] with address = "host:port" to {directory.path} '
                f"(`toex installations --help`), or give --{service}-addr",
            )
        return self.route_to(service, installation)

    def route_to(self, service: str, installation: Installation) -> Route:
        directory = self._routing_directory()
        address = installation.address_of(service)
        if address is None:
            raise CommandFailed(
                f"installation {installation.name} in {directory.path} gives no address for the {service} service",
                f'add {service} = "host:port" (or address = "host:port") under [installations.{installation.name}]',
            )
        return Route(installation, address, directory.path)

    def reroute(self, service: str, wrong: WrongInstallation, tried: Route) -> Route | None:
        directory = self._routing_directory()
        target = directory.named(wrong.installation) if wrong.installation else None
        if target is None and wrong.region:
            try:
                target = directory.serving(Region.parse(wrong.region))
            except ValueError:
                target = None
        if target is None or target.name == tried.installation.name:
            return None
        address = target.address_of(service)
        return Route(target, address, directory.path) if address else None

    def _fixed_installation(self, service: str) -> Installation:
        directory = self._routing_directory()
        name = self.fixed[service]
        installation = directory.named(name)
        if installation is None:
            raise CommandFailed(
                f"the {service} service runs at installation {name}, which {directory.path} does not list",
                f'add [installations.{name}] with {service} = "host:port" (or address = "host:port"), '
                f"or give --{service}-addr",
            )
        return installation

    def note(self, text: str) -> None:
        click.echo(text, err=True)

    def _routing_directory(self) -> Directory:
        directory = self.directory
        assert directory is not None, "only a directory routes"
        return directory

    def login_region(self) -> Region | None:
        """The region of the login (read from the token, unverified: it chooses where to ask,
        never what is allowed)."""
        try:
            token = self.tokens.access_token()
        except LoginRequired as exc:
            raise CommandFailed(str(exc)) from None
        try:
            return Region.parse(str(jwt_claims(token).get("region") or ""))
        except ValueError:
            return None

    def home_installation(self) -> Installation:
        """Where a call that names no region goes: the directory's `home`, else the installation
        serving the login's region, else the directory's only installation."""
        directory = self._routing_directory()
        if directory.home:
            home = directory.named(directory.home)
            assert home is not None  # the directory checks its home on loading
            return home
        region = self.login_region()
        if region is not None and (serving := directory.serving(region)) is not None:
            return serving
        if len(directory.installations) == 1:
            return directory.installations[0]
        raise CommandFailed(
            "this names no region, and the directory has no installation for your login's region "
            f"({region.value if region else 'unknown'})",
            f'set home = "NAME" in {directory.path} to the installation such calls should go to',
        )

    def gather(self, service: str, fetch: Callable[[], T]) -> Gathered[T]:
        """`fetch()` (one listing of every region you may see) from each installation of the
        directory, at the same time; without a directory (or with --<service>-addr given), once.

        An installation that fails is reported, not raised (`Gathered.finish`), unless none
        answered: then the first failure is the command's error."""
        directory = self.directory if self.routes(service) else None
        if directory is None or service in self.fixed:  # one place answers for every region
            return Gathered([(None, fetch())])
        self.metadata()  # the token once, before the threads need it
        installations = directory.installations

        def ask(installation: Installation) -> T:
            pinned = PINNED.set(installation)
            try:
                return fetch()
            finally:
                PINNED.reset(pinned)

        answers: list[tuple[Installation | None, T]] = []
        unanswered: list[Unanswered] = []
        workers = min(MAX_PARALLEL_INSTALLATIONS, len(installations))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="toex-gather") as pool:
            futures = [pool.submit(ask, installation) for installation in installations]
            for installation, future in zip(installations, futures, strict=True):
                try:
                    answers.append((installation, future.result()))
                except CommandFailed as exc:
                    address = installation.address_of(service) or ""
                    unanswered.append(Unanswered(installation, address, exc))
        gathered = Gathered(answers, unanswered, directory)
        if not answers:
            gathered.report()
            raise unanswered[0].error
        return gathered

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
        anonymous: bool = False,
    ) -> R:
        """One unary call with the caller's token and purpose; a failure becomes exit code 1.
        `anonymous` sends no login (a method whose request carries its own credential)."""
        try:
            metadata = [] if anonymous else self.metadata()
            return method(request, metadata=metadata, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise rpc_failure(
                exc, service=service, address=self.address(service), field_options=field_options
            ) from None

    def close(self) -> None:
        for channel in [*self._channels.values(), *self._by_address.values()]:
            channel.close()
        self._channels.clear()
        self._by_address.clear()


class PartialAnswer(click.ClickException):
    """Exit code 3: what the installations that answered said is shown; the others are named."""

    exit_code = PARTIAL_EXIT_CODE

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"Partial answer: {self.format_message()}", file=file, err=True)


@dataclass
class Unanswered:
    """An installation that failed to answer for the regions it serves."""

    installation: Installation
    address: str
    error: CommandFailed

    @property
    def reason(self) -> str:
        return self.error.format_message().splitlines()[0]

    def lines(self) -> list[str]:
        said = "not answered" if self.error.code in NOT_ANSWERED or not self.error.code else "refused"
        where = f"installation {self.installation.name}" + (f", {self.address}" if self.address else "")
        return [f"{region.value}: {said} ({self.reason}) [{where}]" for region in self.installation.regions]

    def to_json(self) -> dict[str, Any]:
        return {
            "regions": [r.value for r in self.installation.regions],
            "installation": self.installation.name,
            "address": self.address,
            "error": self.reason,
        }


@dataclass
class Gathered(Generic[T]):
    """What `CliContext.gather` collected: each installation's answer (None for the one address
    used without a directory) and the installations that did not answer."""

    answers: list[tuple[Installation | None, T]]
    unanswered: list[Unanswered] = field(default_factory=list)
    directory: Directory | None = None

    @property
    def fanned_out(self) -> bool:
        """Whether every installation of a directory was asked (else: one address, as always)."""
        return self.directory is not None

    def values(self) -> list[T]:
        return [value for _, value in self.answers]

    def json(self, data: dict[str, Any]) -> dict[str, Any]:
        """`data` with the installations that did not answer, when there were several to ask."""
        if not self.fanned_out:
            return data
        return {**data, "unanswered": [u.to_json() for u in self.unanswered]}

    def report(self) -> None:
        """A line per region that did not answer, and the regions nobody was asked for."""
        for unanswered in self.unanswered:
            for line in unanswered.lines():
                click.echo(line, err=True)
        if self.directory is not None and (unserved := self.directory.unserved()):
            click.echo(
                f"Not asked (no installation in {self.directory.path} serves them): "
                + ", ".join(r.value for r in unserved),
                err=True,
            )

    def finish(self) -> None:
        """After the data is printed: the report, and exit code 3 if an installation failed."""
        if not self.fanned_out:
            return
        self.report()
        if self.unanswered:
            asked = len(self.answers) + len(self.unanswered)
            raise PartialAnswer(
                f"{len(self.answers)} of {asked} installations answered; "
                "the regions named above are missing from what is shown"
            )


def _warn_unless_protected(address: str) -> None:
    if not address.startswith(TLS_SCHEME) and not is_loopback(address):
        click.echo(
            f"Warning: your token goes to {address} unencrypted; use tls://{address} "
            "unless the network in between is trusted",
            err=True,
        )


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
