"""The stack the soak runs against: `make up`'s own `toex_devstack.stack.Stack`, on free ports
in a state directory of its own, and the three things the fault schedule does to it.

`Stack` reads its services (names, ports, the PND simulator's port) from
`<root>/deploy/devstack/services.toml` and keeps its state in `<root>/.devstack`, so the soak
gives it a root of its own in a temporary directory: the repository's services.toml with every
port moved to a free one, and the realm file. Nothing of a `make up` on the default ports is
touched. With `keycloak_url` the stack uses a Keycloak that is already running (the realm and
its demo users must be there) instead of starting one, which takes a minute or two.

A killed service is started again as Kubernetes restarts a pod: `python -m <module> serve` with
the environment the stack gave it the first time (captured when the stack migrated it), no
migration and no demo data.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from toex_devstack._proc import LOOPBACK, free_port, process_alive, terminate_group, wait_until
from toex_devstack.keycloak import Keycloak
from toex_devstack.postgres import Postgres
from toex_devstack.stack import (
    REALM_FILE,
    SERVICES_FILE,
    Ports,
    ServiceSpec,
    Stack,
    grpc_serving,
    load_services,
)

REPO = Path(__file__).resolve().parents[2]
SERVICE_START_SECONDS = 90.0

Echo = Callable[[str], None]


class _OwnStack(Stack):
    """`Stack` that may use a running Keycloak, and remembers each service's environment."""

    def __init__(self, root: Path, *, ports: Ports, echo: Echo, keycloak_url: str | None) -> None:
        super().__init__(root, ports=ports, echo=echo)
        self.keycloak_url = keycloak_url
        self.service_env: dict[str, dict[str, str]] = {}

    def _start_keycloak(self, state: dict[str, Any], ports: Ports) -> Keycloak | None:
        if self.keycloak_url is None:
            return super()._start_keycloak(state, ports)
        if not Keycloak.external(self.keycloak_url).ready():
            raise RuntimeError(f"no Keycloak with realm toex answers at {self.keycloak_url}")
        self.echo(f"Using the running Keycloak at {self.keycloak_url}")
        return None

    def _run_module(
        self, spec: ServiceSpec, command: str, env: dict[str, str], log_path: Path
    ) -> subprocess.CompletedProcess[str]:
        # The stack migrates each service just before serving it, with the same environment.
        if command == "migrate":
            self.service_env[spec.name] = dict(env)
        return super()._run_module(spec, command, env, log_path)

    def save_state(self, state: dict[str, Any]) -> None:
        self._save_state(state)


def _own_root(workdir: Path) -> Path:
    """A root for `Stack`: services.toml with every port (services and the PND simulator)
    moved to a free one, and the realm file."""
    root = workdir / "root"
    (root / SERVICES_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / REALM_FILE).parent.mkdir(parents=True, exist_ok=True)
    text = (REPO / SERVICES_FILE).read_text()
    used = {int(entry["port"]) for entry in tomllib.loads(text).get("service", [])}
    used |= {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}
    used |= {int(p) for p in re.findall(r'"--port", "(\d+)"', text)}
    moved = {str(port): str(free_port()) for port in used}
    text = re.sub(r"\b\d{4,5}\b", lambda m: moved.get(m.group(0), m.group(0)), text)
    (root / SERVICES_FILE).write_text(text)
    shutil.copyfile(REPO / REALM_FILE, root / REALM_FILE)
    return root


class SoakStack:
    """NATS, PostgreSQL, (Keycloak) and the five services on free loopback ports."""

    def __init__(self, workdir: Path, *, keycloak_url: str | None = None, echo: Echo = print) -> None:
        # As root the cluster is run by an unprivileged user, who must reach the data directory.
        workdir.chmod(0o755)
        self.root = _own_root(workdir)
        self.root.chmod(0o755)
        keycloak_port = (httpx.URL(keycloak_url).port or 80) if keycloak_url else free_port()
        ports = Ports(
            nats=free_port(), nats_monitor=free_port(), postgres=free_port(), keycloak=keycloak_port
        )
        self.echo = echo
        self.keycloak_url = keycloak_url or f"http://{LOOPBACK}:{keycloak_port}"
        self._stack = _OwnStack(self.root, ports=ports, echo=echo, keycloak_url=keycloak_url)
        self.services: dict[str, ServiceSpec] = {s.name: s for s in load_services(self.root)}

    # -- lifecycle ---------------------------------------------------------------------------

    def up(self) -> None:
        if self._stack.up() != 0:
            raise RuntimeError(f"the stack did not start; logs in {self.logs}")
        missing = sorted(set(self.services) - set(self._stack.service_env))
        if missing:
            raise RuntimeError(f"services not started: {', '.join(missing)}")

    def down(self) -> None:
        self._stack.down()

    # -- endpoints ---------------------------------------------------------------------------

    @property
    def ports(self) -> Ports:
        return self._stack.ports

    @property
    def logs(self) -> Path:
        return self._stack.logs

    @property
    def nats_url(self) -> str:
        return f"nats://{LOOPBACK}:{self.ports.nats}"

    def address(self, service: str) -> str:
        return f"{LOOPBACK}:{self.services[service].port}"

    def addresses(self) -> dict[str, str]:
        return {name: self.address(name) for name in self.services}

    def database(self, service: str) -> str:
        return self.services[service].database

    def dsn(self, service: str) -> str:
        """The service's database as the superuser (plain libpq URL, for asyncpg)."""
        return self.postgres.dsn(self.database(service))

    @property
    def postgres(self) -> Postgres:
        state = self._stack.load_state()
        return Postgres(port=self.ports.postgres, data_dir=state["postgres"]["data_dir"])

    # -- faults ------------------------------------------------------------------------------

    def stop_nats(self) -> None:
        """SIGTERM nats-server (JetStream flushes its store) and wait until it has gone."""
        state = self._stack.load_state()
        pid = int(state["nats"]["pid"])
        terminate_group(pid, timeout=15)
        _reap(pid)

    def start_nats(self) -> None:
        """nats-server again on the same port and store; returns once JetStream is healthy."""
        state = self._stack.load_state()
        nats = self._stack._nats(self.ports)
        nats.start()
        state["nats"]["pid"] = nats.pid
        self._stack.save_state(state)

    def stop_postgres(self) -> None:
        """`pg_ctl stop -m fast`: open transactions roll back, every session is cut."""
        self.postgres.stop()

    def start_postgres(self) -> None:
        self.postgres.start()

    def kill_service(self, service: str) -> int:
        """SIGKILL the service's process group (as a pod is killed): no shutdown runs."""
        state = self._stack.load_state()
        pid = int(state["services"][service]["pid"])
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        wait_until(lambda: not process_alive(pid), timeout=10, what=f"{service} to die")
        _reap(pid)
        return pid

    def start_service(self, service: str) -> None:
        """`python -m <module> serve` with the environment of its first start, logging to the
        same file; returns once its gRPC health answers SERVING."""
        spec = self.services[service]
        state = self._stack.load_state()
        log_path = Path(state["services"][service]["log"])
        with log_path.open("ab") as log:
            log.write(f"--- python -m {spec.module} serve (restarted by the soak) ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", spec.module, "serve"],
                cwd=self.root,
                env=self._stack.service_env[service],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        state["services"][service]["pid"] = proc.pid
        self._stack.save_state(state)
        wait_until(
            lambda: grpc_serving(spec.port, timeout=1.0),
            timeout=SERVICE_START_SECONDS,
            what=f"service {service} after its restart",
            alive=lambda: proc.poll() is None,
            log=log_path,
            interval=0.2,
        )


def _reap(pid: int) -> None:
    """Collect the exit status of a child this process started (else it lingers as a zombie)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
