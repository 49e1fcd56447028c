"""The local stack behind `make up`: NATS, PostgreSQL and Keycloak on loopback, then the services.

Everything lives under ``<repo>/.devstack`` (state.json, data, logs) and is thrown away by ``down``;
only the Keycloak distribution cache (~/.cache/toex/keycloak) is kept between runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from ._proc import (
    LOOPBACK,
    DevstackError,
    ensure_port_free,
    is_root,
    port_open,
    process_alive,
    process_cmdline,
    tail,
    terminate_groups,
    wait_until,
)
from .keycloak import DEMO_PASSWORD, Keycloak, ensure_distribution, find_java_home, service_client_secret
from .nats import NatsServer, find_nats_server
from .postgres import Postgres, ServiceDatabase, find_pg_bindir

SERVICES_FILE = Path("deploy/devstack/services.toml")
REALM_FILE = Path("deploy/keycloak/realm-toex.json")
OIDC_AUDIENCE = "toex"
HEALTH_TIMEOUT = 60.0

Echo = Callable[[str], None]


@dataclass(frozen=True)
class ServiceSpec:
    """One entry of deploy/devstack/services.toml."""

    name: str
    module: str
    port: int
    database: str
    client_id: str
    # Extra settings for the service process ([service.env]).
    env: tuple[tuple[str, str], ...] = ()
    # A helper process started before the service ([service.sidecar]): `python ARGS`, with
    # `{state}` replaced by the devstack state directory, ready when `health` answers 200.
    sidecar_args: tuple[str, ...] = ()
    sidecar_health: str = ""


@dataclass(frozen=True)
class Ports:
    nats: int = 4222
    nats_monitor: int = 8222
    postgres: int = 5432
    keycloak: int = 8080


@dataclass
class ComponentStatus:
    name: str
    up: bool
    pid: int | None
    endpoint: str
    note: str = ""


@dataclass(frozen=True)
class Place:
    """Where a set of services runs: their entries in the state file, their logs, and the
    directory that `{state}` in services.toml names (their throwaway data)."""

    entries: dict[str, Any]
    logs: Path
    data: Path
    # How messages name the set's services (`EMSOU/` in a federation; nothing in the stack).
    label: str = ""


# The settings a service process gets, given the database made for it.
Settings = Callable[[ServiceDatabase], dict[str, str]]


def find_repo_root(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` (default: cwd) holding deploy/devstack/services.toml."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / SERVICES_FILE).is_file():
            return candidate
    raise DevstackError(f"no {SERVICES_FILE} found at or above {here}: run this inside the toex repository")


def load_services(root: Path) -> list[ServiceSpec]:
    data = tomllib.loads((root / SERVICES_FILE).read_text())
    specs = []
    for entry in data.get("service", []):
        try:
            specs.append(
                ServiceSpec(
                    name=str(entry["name"]),
                    module=str(entry["module"]),
                    port=int(entry["port"]),
                    database=str(entry["database"]),
                    client_id=str(entry["client_id"]),
                    env=tuple((str(k), str(v)) for k, v in entry.get("env", {}).items()),
                    sidecar_args=tuple(str(a) for a in entry.get("sidecar", {}).get("args", [])),
                    sidecar_health=str(entry.get("sidecar", {}).get("health", "")),
                )
            )
        except KeyError as exc:
            raise DevstackError(f"{SERVICES_FILE}: service entry {entry!r} lacks {exc}") from exc
    return specs


def load_web(root: Path) -> list[dict[str, Any]]:
    """The `[[web]]` entries of services.toml: HTTP front ends started after the services."""
    entries = tomllib.loads((root / SERVICES_FILE).read_text()).get("web", [])
    for entry in entries:
        missing = {"name", "module", "port", "health"} - set(entry)
        if missing:
            raise DevstackError(f"{SERVICES_FILE}: web entry {entry!r} lacks {sorted(missing)}")
    return list(entries)


def service_environment(
    spec: ServiceSpec,
    *,
    database_url: str,
    nats_url: str,
    oidc_issuer: str,
    migration_database_url: str = "",
) -> dict[str, str]:
    """The settings each service process gets from the local stack (its config reads TOEX_*):
    it runs as its database's runtime role and migrates as the owning one, in one installation
    serving every region."""
    return {
        "TOEX_INSTALLATION": "single",
        "TOEX_DATABASE_URL": database_url,
        "TOEX_MIGRATION_DATABASE_URL": migration_database_url,
        "TOEX_NATS_URL": nats_url,
        "TOEX_OIDC_ISSUER": oidc_issuer,
        "TOEX_OIDC_AUDIENCE": OIDC_AUDIENCE,
        "TOEX_GRPC_HOST": LOOPBACK,
        "TOEX_GRPC_PORT": str(spec.port),
        "TOEX_SERVICE_CLIENT_ID": spec.client_id,
        "TOEX_SERVICE_CLIENT_SECRET": service_client_secret(spec.client_id),
        "TOEX_LOG_LEVEL": "INFO",
    }


def grpc_serving(port: int, timeout: float = 2.0) -> bool:
    """True if the standard gRPC health service answers SERVING for the server as a whole."""
    with grpc.insecure_channel(f"{LOOPBACK}:{port}", options=[("grpc.enable_http_proxy", 0)]) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
    return bool(response.status == health_pb2.HealthCheckResponse.SERVING)


def runnable(module: str) -> bool:
    """Whether `python -m module` can run here: the package is installed and has a __main__."""
    try:
        return importlib.util.find_spec(f"{module}.__main__") is not None
    except Exception:  # a half-written package that fails to import is not runnable either
        return False


def _world_searchable(path: Path) -> bool:
    """Whether an unprivileged user can reach ``path`` (every existing ancestor has o+x)."""
    for directory in (path, *path.parents):
        if directory.exists():
            if not directory.stat().st_mode & stat.S_IXOTH:
                return False
    return True


class Stack:
    """Start, stop and report the local stack of one repository checkout."""

    def __init__(self, root: Path, *, ports: Ports | None = None, echo: Echo = print) -> None:
        self.root = root
        self.ports = ports or Ports()
        self.echo = echo
        self.dir = root / ".devstack"
        self.logs = self.dir / "logs"
        self.state_file = self.dir / "state.json"
        # Services may start in parallel (a federation's do): one writer of the state at a time.
        self._lock = threading.RLock()
        # Off only for clusters thrown away at the end of a test run.
        self.fsync = True

    # -- state -----------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except (OSError, ValueError):
            return {}
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(state, indent=2) + "\n")
            tmp.chmod(0o600)  # a federation's holds the passwords of its NATS users
            tmp.replace(self.state_file)

    def _remember(
        self, state: dict[str, Any], entries: dict[str, Any], name: str, entry: dict[str, Any]
    ) -> None:
        with self._lock:
            entries[name] = entry
            self._save_state(state)

    def _pg_dir(self) -> Path:
        local = self.dir / "pg"
        if not is_root() or _world_searchable(self.dir):
            return local
        # As root the cluster belongs to an unprivileged user, who cannot enter a private checkout.
        digest = hashlib.sha256(str(self.dir).encode()).hexdigest()[:12]
        return Path("/var/tmp/toex-devstack") / digest / "pg"

    def _ports_from(self, state: dict[str, Any]) -> Ports:
        saved = state.get("ports")
        return Ports(**saved) if saved else self.ports

    # -- components ------------------------------------------------------------------------------

    def _nats(self, ports: Ports) -> NatsServer:
        return NatsServer(
            port=ports.nats,
            store_dir=self.dir / "nats",
            monitor_port=ports.nats_monitor,
            log_file=self.logs / "nats.log",
        )

    def _postgres(self, ports: Ports, state: dict[str, Any]) -> Postgres:
        data_dir = state.get("postgres", {}).get("data_dir") or self._pg_dir()
        return Postgres(port=ports.postgres, data_dir=data_dir, fsync=self.fsync)

    def _keycloak(self, ports: Ports) -> Keycloak:
        return Keycloak(
            port=ports.keycloak,
            home_dir=self.dir / "keycloak",
            realm_file=self.root / REALM_FILE,
            log_file=self.logs / "keycloak.log",
        )

    @staticmethod
    def _ours(entry: dict[str, Any] | None, marker: str) -> int | None:
        """The recorded pid if that process is still alive and still the one we started."""
        pid = (entry or {}).get("pid")
        if pid and process_alive(pid) and marker in process_cmdline(pid):
            return int(pid)
        return None

    # -- up ----------------------------------------------------------------------------------------

    def up(self) -> int:
        if self._other_running():
            return 1
        state = self.load_state()
        ports = self._ports_from(state)
        specs = load_services(self.root)
        if state and self._all_up(state, specs):
            self.echo("The local stack is already running.")
            self._print_endpoints(state, specs)
            return 0
        state.update(root=str(self.root), ports=ports.__dict__)
        state.setdefault("services", {})
        self.logs.mkdir(parents=True, exist_ok=True)

        postgres = self._start_shared(state, ports, lambda: self._start_nats(state, ports))
        if postgres is None:
            return 1
        failures = 0
        for spec in specs:
            if not self._start_service(state, spec, ports, postgres):
                failures += 1
        for web in load_web(self.root):
            if not self._start_web(state, web, ports):
                failures += 1
        self._print_endpoints(state, specs)
        if failures:
            self.echo(f"{failures} service(s) did not start; see the messages above.")
            return 1
        return 0

    def _other_running(self) -> bool:
        """Whether the local federation runs (it holds the same PostgreSQL and Keycloak ports)."""
        from .federation import Federation, clashes  # the federation is built on this module

        federation = Federation(self.root)
        if federation.state_file.exists() and clashes(self, federation) and federation.running():
            self.echo(
                "The local federation (`make up-federation`) is running: stop it with `make down` first."
            )
            return True
        return False

    def _start_shared(
        self, state: dict[str, Any], ports: Ports, brokers: Callable[[], None]
    ) -> Postgres | None:
        """Keycloak (launched first: it boots while the rest starts), the brokers, PostgreSQL, then
        wait for Keycloak; None, having said why, if something could not start."""
        try:
            keycloak = self._start_keycloak(state, ports)
            brokers()
            postgres = self._start_postgres(state, ports)
            if keycloak is not None:
                self.echo(
                    f"Waiting for Keycloak on {keycloak.base_url} (first start takes up to a minute) ..."
                )
                started = time.monotonic()
                keycloak.wait_ready(progress=self.echo)
                self.echo(f"  Keycloak ready after {time.monotonic() - started:.0f} s")
        except DevstackError as exc:
            self.echo(f"ERROR: {exc}")
            self.echo("Some components may be running: `toex-devstack down` stops them.")
            return None
        return postgres

    def _start_nats(self, state: dict[str, Any], ports: Ports) -> None:
        if self._ours(state.get("nats"), "nats-server") and port_open(ports.nats):
            self.echo(f"NATS already running on nats://{LOOPBACK}:{ports.nats}")
            return
        ensure_port_free(ports.nats, "NATS")
        ensure_port_free(ports.nats_monitor, "NATS monitoring")
        nats = self._nats(ports)
        self.echo(f"Starting NATS (JetStream) on {nats.url} ...")
        nats.start(progress=self.echo)
        state["nats"] = {
            "pid": nats.pid,
            "port": nats.port,
            "url": nats.url,
            "store_dir": str(nats.store_dir),
            "log": str(nats.log_file),
        }
        self._save_state(state)

    def _start_postgres(self, state: dict[str, Any], ports: Ports) -> Postgres:
        postgres = self._postgres(ports, state)
        if postgres.running:
            self.echo(f"PostgreSQL already running on {LOOPBACK}:{ports.postgres}")
            return postgres
        ensure_port_free(ports.postgres, "PostgreSQL")
        self.echo(f"Starting PostgreSQL on {LOOPBACK}:{ports.postgres} (data in {postgres.data_dir}) ...")
        state["postgres"] = {"port": postgres.port, "data_dir": str(postgres.data_dir)}
        self._save_state(state)
        started = time.monotonic()
        postgres.start(progress=self.echo)
        self.echo(f"  PostgreSQL ready after {time.monotonic() - started:.1f} s")
        state["postgres"].update(pid=postgres.pid, log=str(postgres.log_file))
        self._save_state(state)
        return postgres

    def _start_keycloak(self, state: dict[str, Any], ports: Ports) -> Keycloak | None:
        """Launch Keycloak without waiting, so it boots while NATS and PostgreSQL start."""
        keycloak = self._keycloak(ports)
        if self._ours(state.get("keycloak"), "keycloak") and keycloak.ready():
            self.echo(f"Keycloak already running on {keycloak.base_url}")
            return None
        ensure_port_free(ports.keycloak, "Keycloak")
        self.echo(f"Starting Keycloak on {keycloak.base_url} ...")
        keycloak.start(progress=self.echo, wait=False)
        state["keycloak"] = {
            "pid": keycloak.pid,
            "port": keycloak.port,
            "base_url": keycloak.base_url,
            "issuer": keycloak.issuer,
            "home_dir": str(keycloak.home_dir),
            "log": str(keycloak.log_file),
        }
        self._save_state(state)
        return keycloak

    def _run_module(
        self, spec: ServiceSpec, command: str, env: dict[str, str], log_path: Path
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", spec.module, command],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
            timeout=300,
        )
        with log_path.open("a") as log:
            log.write(f"--- python -m {spec.module} {command} (exit {result.returncode}) ---\n")
            log.write(result.stdout + result.stderr)
        return result

    def _start_service(
        self, state: dict[str, Any], spec: ServiceSpec, ports: Ports, postgres: Postgres
    ) -> bool:
        def settings(database: ServiceDatabase) -> dict[str, str]:
            return service_environment(
                spec,
                database_url=database.runtime_url,
                migration_database_url=database.migration_url,
                nats_url=f"nats://{LOOPBACK}:{ports.nats}",
                oidc_issuer=f"http://{LOOPBACK}:{ports.keycloak}/realms/toex",
            )

        place = Place(state["services"], self.logs, self.dir)
        return self._launch(state, place, spec, postgres, settings, seed=True)

    def _launch(
        self,
        state: dict[str, Any],
        place: Place,
        spec: ServiceSpec,
        postgres: Postgres,
        settings: Settings,
        *,
        seed: bool,
    ) -> bool:
        """Create the service's database, migrate it, start `serve` (after its sidecar), wait for
        gRPC health and (with `seed`) load the demo data; False, with the reason said, if not."""
        name = f"{place.label}{spec.name}"
        entry = place.entries.get(spec.name)
        if self._ours(entry, spec.module) and grpc_serving(spec.port):
            self.echo(f"Service {name} already running on {LOOPBACK}:{spec.port}")
            return True
        if not runnable(spec.module):
            self.echo(
                f"WARNING: service {name}: `python -m {spec.module}` is not available in this environment "
                "(not written yet, or run `uv sync --all-packages`); skipping it"
            )
            return True
        place.logs.mkdir(parents=True, exist_ok=True)
        log_path = place.logs / f"{spec.name}.log"
        log_path.write_text("")
        try:
            ensure_port_free(spec.port, f"service {name}")
            database = postgres.service_database(
                spec.database, owner=spec.database, runtime=f"{spec.database}_app"
            )
        except DevstackError as exc:
            self.echo(f"ERROR: service {name}: {exc}")
            return False
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **settings(database)}
        env.update({key: value.replace("{state}", str(place.data)) for key, value in spec.env})
        if spec.sidecar_args and not self._start_sidecar(state, place, spec, env):
            return False

        self.echo(f"Service {name}: migrating database {spec.database} ...")
        began = time.monotonic()
        migrate = self._run_module(spec, "migrate", env, log_path)
        if migrate.returncode != 0:
            self.echo(f"ERROR: `python -m {spec.module} migrate` failed ({name}):\n{tail(log_path)}")
            return False

        self.echo(f"Service {name}: starting gRPC server on {LOOPBACK}:{spec.port} ...")
        with log_path.open("ab") as log:
            log.write(f"--- python -m {spec.module} serve ---\n".encode())
            log.flush()
            proc = subprocess.Popen(
                [sys.executable, "-m", spec.module, "serve"],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._remember(
            state,
            place.entries,
            spec.name,
            {
                "pid": proc.pid,
                "port": spec.port,
                "module": spec.module,
                "database": spec.database,
                "log": str(log_path),
            },
        )
        try:
            wait_until(
                lambda: grpc_serving(spec.port, timeout=1.0),
                timeout=HEALTH_TIMEOUT,
                what=f"service {name} (gRPC health on {LOOPBACK}:{spec.port})",
                alive=lambda: proc.poll() is None,
                log=log_path,
                progress=self.echo,
                interval=0.3,
            )
        except DevstackError as exc:
            self.echo(f"ERROR: {exc}")
            return False
        self.echo(f"Service {name}: serving ({time.monotonic() - began:.1f} s after its migration began)")
        if not seed:
            return True

        seed_run = self._run_module(spec, "seed-demo", env, log_path)
        output = (seed_run.stdout + seed_run.stderr).lower()
        if seed_run.returncode == 2 and "no such command" in output:
            self.echo(f"Service {name}: no seed-demo command; no demo data loaded")
        elif seed_run.returncode != 0:
            self.echo(f"WARNING: `python -m {spec.module} seed-demo` failed:\n{tail(log_path)}")
        else:
            self.echo(f"Service {name}: demo data loaded")
        return True

    def _start_sidecar(
        self, state: dict[str, Any], place: Place, spec: ServiceSpec, env: dict[str, str]
    ) -> bool:
        name = f"{spec.name}-sidecar"
        args = [a.replace("{state}", str(place.data)) for a in spec.sidecar_args]
        module = args[1] if len(args) > 1 and args[0] == "-m" else args[0]
        log_path = place.logs / f"{name}.log"
        self.echo(f"Service {place.label}{spec.name}: starting {' '.join(args)} ...")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, *args],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._remember(state, place.entries, name, {"pid": proc.pid, "module": module, "log": str(log_path)})

        def healthy() -> bool:
            try:
                return httpx.get(spec.sidecar_health, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(
                healthy,
                timeout=HEALTH_TIMEOUT,
                what=f"{place.label}{name} ({spec.sidecar_health})",
                alive=lambda: proc.poll() is None,
                log=log_path,
                progress=self.echo,
                interval=0.3,
            )
        except DevstackError as exc:
            self.echo(f"ERROR: {exc}")
            return False
        return True

    def _start_web(self, state: dict[str, Any], web: dict[str, Any], ports: Ports) -> bool:
        """A web front end (the console): `python -m <module> serve`, waited for on its HTTP
        health address; it keeps no data, so there is nothing to migrate or seed."""
        name, module, port = str(web["name"]), str(web["module"]), int(web["port"])
        health = str(web["health"])
        entries = state["services"]
        if self._ours(entries.get(name), module):
            self.echo(f"Web {name} already running on http://{LOOPBACK}:{port}")
            return True
        if not runnable(module):
            self.echo(f"WARNING: web {name}: `python -m {module}` is not available; skipping it")
            return True
        try:
            ensure_port_free(port, f"web {name}")
        except DevstackError as exc:
            self.echo(f"ERROR: web {name}: {exc}")
            return False
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "TOEX_OIDC_ISSUER": f"http://{LOOPBACK}:{ports.keycloak}/realms/toex",
            "TOEX_HTTP_HOST": LOOPBACK,
            "TOEX_HTTP_PORT": str(port),
            **{str(k): str(v) for k, v in web.get("env", {}).items()},
        }
        self.logs.mkdir(parents=True, exist_ok=True)
        log_path = self.logs / f"{name}.log"
        self.echo(f"Web {name}: starting on http://{LOOPBACK}:{port} ...")
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", module, "serve"],
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        self._remember(
            state, entries, name, {"pid": proc.pid, "port": port, "module": module, "log": str(log_path)}
        )

        def healthy() -> bool:
            try:
                return httpx.get(health, timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        try:
            wait_until(
                healthy,
                timeout=HEALTH_TIMEOUT,
                what=f"web {name} ({health})",
                alive=lambda: proc.poll() is None,
                log=log_path,
                progress=self.echo,
                interval=0.3,
            )
        except DevstackError as exc:
            self.echo(f"ERROR: {exc}")
            return False
        self.echo(f"Web {name}: serving on http://{LOOPBACK}:{port}")
        return True

    # -- down ------------------------------------------------------------------------------------

    def _stop_services(self, entries: dict[str, Any], label: str = "") -> None:
        """SIGTERM every service (and sidecar) we started, at once, and wait for them all."""
        pids = []
        for name, entry in entries.items():
            pid = self._ours(entry, entry.get("module", name))
            if pid:
                self.echo(f"Stopping service {label}{name} (pid {pid}) ...")
                pids.append(pid)
        terminate_groups(pids, timeout=20)

    def _stop_shared(self, state: dict[str, Any], ports: Ports) -> None:
        """Keycloak and PostgreSQL, when we started them."""
        pid = self._ours(state.get("keycloak"), "keycloak")
        if pid:
            self.echo(f"Stopping Keycloak (pid {pid}) ...")
            terminate_groups([pid], timeout=30)
        if state.get("postgres"):
            postgres = self._postgres(ports, state)
            if postgres.pid and process_alive(postgres.pid):
                self.echo(f"Stopping PostgreSQL (pid {postgres.pid}) ...")
            postgres.stop()

    def _remove_data(self, state: dict[str, Any], directories: Iterable[Path]) -> None:
        """Throwaway data goes; logs stay for a post-mortem; the Keycloak download cache is elsewhere."""
        data_dirs = [*directories, self.dir / "keycloak"]
        if state.get("postgres", {}).get("data_dir"):
            data_dirs.append(Path(state["postgres"]["data_dir"]))
        for directory in data_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def down(self) -> int:
        state = self.load_state()
        ports = self._ports_from(state)
        if not state:
            self.echo("The local stack is not running (no .devstack/state.json).")
        self._stop_services(state.get("services", {}))
        self._stop_shared(state, ports)
        pid = self._ours(state.get("nats"), "nats-server")
        if pid:
            self.echo(f"Stopping NATS (pid {pid}) ...")
            terminate_groups([pid], timeout=15)
        self._remove_data(
            state,
            [self.dir / "nats", self.dir / "pg", self.dir / "pnd-simulator", self.dir / "comms-data"],
        )
        if state:
            self.echo(f"The local stack is stopped and its data removed (logs kept in {self.logs}).")
        return 0

    # -- status ----------------------------------------------------------------------------------

    def running(self) -> bool:
        """Whether anything of this stack still runs (by its state file)."""
        return any(item.pid for item in self.status()) if self.state_file.exists() else False

    def _shared_status(self, state: dict[str, Any], ports: Ports) -> tuple[list[ComponentStatus], int | None]:
        """PostgreSQL and Keycloak; and the PostgreSQL pid, when it is alive."""
        postgres_pid = self._postgres(ports, state).pid if state.get("postgres") else None
        alive = postgres_pid if process_alive(postgres_pid) else None
        pid = self._ours(state.get("keycloak"), "keycloak")
        keycloak = self._keycloak(ports)
        return [
            ComponentStatus(
                "postgres",
                bool(alive) and port_open(ports.postgres),
                alive,
                f"postgresql://toex:toex@{LOOPBACK}:{ports.postgres}/postgres",
            ),
            ComponentStatus("keycloak", bool(pid) and keycloak.ready(), pid, keycloak.base_url),
        ], alive

    def _service_status(
        self, state: dict[str, Any], ports: Ports, spec: ServiceSpec, entry: dict[str, Any] | None, name: str
    ) -> ComponentStatus:
        pid = self._ours(entry, spec.module)
        serving = bool(pid) and grpc_serving(spec.port)
        note = "" if serving or not pid else "process alive but gRPC health is not SERVING"
        if not entry and not runnable(spec.module):
            note = f"python -m {spec.module} not available"
        if entry and process_alive(self._postgres(ports, state).pid if state.get("postgres") else None):
            backlog = self._outbox_backlog(ports, state, spec.database)
            note = f"{note}; {backlog}" if note and backlog else (note or backlog)
        return ComponentStatus(name, serving, pid, f"grpc://{LOOPBACK}:{spec.port}", note)

    def status(self) -> list[ComponentStatus]:
        state = self.load_state()
        ports = self._ports_from(state)
        pid = self._ours(state.get("nats"), "nats-server")
        result = [
            ComponentStatus(
                "nats", bool(pid) and port_open(ports.nats), pid, f"nats://{LOOPBACK}:{ports.nats}"
            )
        ]
        shared, _ = self._shared_status(state, ports)
        result += shared
        for spec in load_services(self.root):
            entry = state.get("services", {}).get(spec.name)
            result.append(self._service_status(state, ports, spec, entry, spec.name))
        return result

    def _outbox_backlog(self, ports: Ports, state: dict[str, Any], database: str) -> str:
        """`outbox: N waiting, oldest Ts`: what the service's relay has still to publish."""
        try:
            answer = self._postgres(ports, state).psql(
                "SELECT count(*), round(coalesce(extract(epoch FROM now() - min(created_at)), 0)) "
                "FROM outbox WHERE published_at IS NULL",
                database=database,
            )
        except DevstackError:
            return ""
        waiting, _, oldest = answer.partition("|")
        return f"outbox: {waiting} waiting" + (f", oldest {oldest}s" if waiting != "0" else "")

    def _all_up(self, state: dict[str, Any], specs: list[ServiceSpec]) -> bool:
        statuses = {s.name: s for s in self.status()}
        infra = all(statuses[name].up for name in ("nats", "postgres", "keycloak"))
        services = all(statuses[spec.name].up or not runnable(spec.module) for spec in specs)
        return infra and services

    def _print_endpoints(self, state: dict[str, Any], specs: list[ServiceSpec]) -> None:
        ports = self._ports_from(state)
        kc = f"http://{LOOPBACK}:{ports.keycloak}"
        self.echo("")
        self.echo("toex local stack (loopback only):")
        self.echo(
            f"  NATS JetStream  nats://{LOOPBACK}:{ports.nats}  (monitoring http://{LOOPBACK}:{ports.nats_monitor})"
        )
        self.echo(f"  PostgreSQL      postgresql://toex:toex@{LOOPBACK}:{ports.postgres}/postgres")
        self.echo(f"  Keycloak        {kc}  issuer {kc}/realms/toex")
        self.echo(f"                  admin console {kc}/admin/  (user admin, password admin)")
        for spec in specs:
            running = spec.name in state.get("services", {})
            where = f"{LOOPBACK}:{spec.port} (gRPC, database {spec.database})"
            self.echo(f"  {spec.name:<15} {where}" + ("" if running else "  [not started]"))
        for web in load_web(self.root):
            running = web["name"] in state.get("services", {})
            where = f"http://{LOOPBACK}:{web['port']}/ (web)"
            self.echo(f"  {web['name']:<15} {where}" + ("" if running else "  [not started]"))
        self.echo(f"  logs            {self.logs}")
        self.echo("")
        self.echo(
            f"Demo logins: realm toex, client toex-cli, password {DEMO_PASSWORD}; users are <role>.<region>, "
            "e.g. researcher.emsou, supervisor.ersou, analyst.emsou, researcher.london, "
            "national_coordinator.national"
        )
        self.echo(
            "  token: curl -s -d grant_type=password -d client_id=toex-cli -d username=researcher.emsou "
            f"-d password={DEMO_PASSWORD} {kc}/realms/toex/protocol/openid-connect/token"
        )
        self.echo("Stop everything with `make down` (or `uv run toex-devstack down`).")


def fetch(echo: Echo = print) -> int:
    """Fetch the Keycloak distribution into the cache and check the other prerequisites."""
    problems = []
    try:
        dist = ensure_distribution(progress=echo)
        echo(f"Keycloak distribution: {dist}")
    except DevstackError as exc:
        problems.append(str(exc))
    for label, finder in (
        ("Java for Keycloak", find_java_home),
        ("PostgreSQL binaries", find_pg_bindir),
        ("nats-server", find_nats_server),
    ):
        try:
            echo(f"{label}: {finder()}")
        except DevstackError as exc:
            problems.append(str(exc))
    for problem in problems:
        echo(f"ERROR: {problem}")
    return 1 if problems else 0
