"""The services as users run them: `python -m toex_<service> migrate` then `serve`, each as its
own process on a free port with a database of its own (migrated by an owning role, served by a
runtime role), driven with the `toex` CLI and raw gRPC, over the real servers from the devstack
fixtures (`postgres`, `nats_server`, `keycloak`).

`tasking_process` runs tasking alone; `platform_stack` runs all five services (and the PND
simulator beside pnd, as `make up` does) with short outbox and dispatch polls, so events travel
between them in well under a second."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from toex_devstack._proc import free_port
from toex_devstack.postgres import Postgres, ServiceDatabase
from toex_devstack.stack import ServiceSpec, grpc_serving, service_environment

pytestmark = pytest.mark.e2e

STARTUP_SECONDS = 60
# Every service of the platform: the CLI's service name (TOEX_<NAME>_ADDR) and its module.
SERVICES = {
    "tasking": "toex_tasking",
    "entity": "toex_entity",
    "pnd": "toex_pnd",
    "comms": "toex_comms",
    "safeguarding": "toex_safeguarding",
}
# Outbox relays poll every 0.2 s (1 s in production): events move between services quickly.
FAST_POLLS = {"TOEX_OUTBOX_POLL_SECONDS": "0.2", "PYTHONUNBUFFERED": "1"}


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log: Path
    module: str = "toex_tasking"
    database: ServiceDatabase | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def spawn_service(env: dict[str, str], log: Path, module: str = "toex_tasking") -> subprocess.Popen[bytes]:
    with open(log, "ab") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", module, "serve"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def wait_serving(proc: subprocess.Popen[bytes], port: int, log: Path, module: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while not grpc_serving(port, timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"{module} did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)


def start_service(env: dict[str, str], log: Path, port: int, module: str = "toex_tasking") -> ServiceProcess:
    """`python -m MODULE serve` with `env`, once its gRPC health answers SERVING."""
    proc = spawn_service(env, log, module)
    wait_serving(proc, port, log, module)
    return ServiceProcess(proc, port, env, log, module)


def service_env(
    name: str,
    port: int,
    database: ServiceDatabase,
    *,
    nats_url: str,
    oidc_issuer: str,
    extra: dict[str, str] | None = None,
) -> dict[str, str]:
    """The TOEX_* settings the local stack gives service `name`, as `make up` does."""
    spec = ServiceSpec(name=name, module=SERVICES[name], port=port, database="", client_id=f"toex-{name}")
    return {
        **os.environ,
        **service_environment(
            spec,
            database_url=database.runtime_url,
            migration_database_url=database.migration_url,
            nats_url=nats_url,
            oidc_issuer=oidc_issuer,
        ),
        **FAST_POLLS,
        **(extra or {}),
    }


def own_database(postgres: Postgres, name: str) -> ServiceDatabase:
    """A new database for service `name`: owned by a role that migrates it, served by a runtime
    role that can only append to the audit log. Each stack gets its own (modules start their own)."""
    database = f"e2e_{name}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    return postgres.service_database(database, owner=f"{database}_owner", runtime=f"{database}_app")


def migrate(module: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", module, "migrate"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def finish_migration(module: str, proc: subprocess.Popen[str]) -> None:
    output, _ = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(f"python -m {module} migrate exited {proc.returncode}:\n{output[-3000:]}")


@pytest.fixture(scope="module")
def tasking_process(postgres, nats_server, keycloak) -> Iterator[ServiceProcess]:
    port = free_port()
    database = own_database(postgres, "tasking")
    env = service_env(
        "tasking",
        port,
        database,
        nats_url=nats_server.url,
        oidc_issuer=keycloak.issuer,
        extra={"TOEX_OVERDUE_SCAN_SECONDS": "1"},
    )
    finish_migration("toex_tasking", migrate("toex_tasking", env))
    log = Path(tempfile.mkdtemp(prefix="toex-e2e-")) / "tasking.log"
    service = start_service(env, log, port)
    service.database = database
    yield service
    service.stop()


@dataclass
class PlatformStack:
    """The five services, each its own process, and the PND simulator pnd talks to."""

    services: dict[str, ServiceProcess]
    postgres: Postgres
    logs: Path
    helpers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __getitem__(self, name: str) -> ServiceProcess:
        return self.services[name]

    def addresses(self) -> dict[str, str]:
        """TOEX_<SERVICE>_ADDR for the CLI, one per service."""
        return {f"TOEX_{name.upper()}_ADDR": s.address for name, s in self.services.items()}

    def sql(self, service: str, query: str) -> str:
        """`query` on the service's database as the superuser (unaligned, tuples only)."""
        database = self.services[service].database
        assert database is not None
        return self.postgres.psql(query, database=database.name)

    def describe(self) -> str:
        """Each process's log tail: what a failing assertion prints to explain itself."""
        return "\n".join(
            f"--- {name} (exit {s.proc.poll()}) ---\n{s.log_text()[-1500:]}"
            for name, s in self.services.items()
        )


def _start_pnd_simulator(logs: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    data = logs / "pnd-simulator"
    with open(logs / "pnd-simulator.log", "ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toex_pnd.simulator", "--port", str(port), "--data-dir", str(data)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            log = (logs / "pnd-simulator.log").read_text(errors="replace")
            raise RuntimeError(f"the PND simulator did not start:\n{log[-3000:]}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def platform_stack(postgres, nats_server, keycloak) -> Iterator[PlatformStack]:
    """All five services as `make up` runs them (see tools/devstack `_start_service`), each on a
    free port with its own database; migrations run side by side, then every server starts."""
    logs = Path(tempfile.mkdtemp(prefix="toex-e2e-stack-"))
    simulator, pnd_url = _start_pnd_simulator(logs)
    ports = {name: free_port() for name in SERVICES}
    extra = {
        "tasking": {"TOEX_INBOX_POLL_SECONDS": "0.5"},
        "entity": {},
        "pnd": {
            "TOEX_PND_URL": pnd_url,
            "TOEX_RECONCILE_INTERVAL_SECONDS": "0",
            "TOEX_DISPATCH_POLL_SECONDS": "0.2",
            "TOEX_RETRY_BASE_SECONDS": "0.5",
        },
        "comms": {"TOEX_DATA_DIR": str(logs / "comms-data")},
        "safeguarding": {"TOEX_TASKING_ADDRESS": f"127.0.0.1:{ports['tasking']}"},
    }
    databases = {name: own_database(postgres, f"stack_{name}") for name in SERVICES}
    envs = {
        name: service_env(
            name,
            ports[name],
            databases[name],
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
            extra=extra[name],
        )
        for name in SERVICES
    }
    started: dict[str, ServiceProcess] = {}
    stack = PlatformStack(started, postgres, logs, [simulator])
    try:
        migrations = {name: migrate(module, envs[name]) for name, module in SERVICES.items()}
        for name, proc in migrations.items():
            finish_migration(SERVICES[name], proc)
        for name, module in SERVICES.items():
            log = logs / f"{name}.log"
            started[name] = ServiceProcess(
                spawn_service(envs[name], log, module), ports[name], envs[name], log, module, databases[name]
            )
        for service in started.values():
            wait_serving(service.proc, service.port, service.log, service.module)
        yield stack
    finally:
        for service in started.values():
            service.stop()
        simulator.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            simulator.wait(10)
        if simulator.poll() is None:
            simulator.kill()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    """A failing test against the platform stack shows each service's log tail with it."""
    outcome = yield
    report = outcome.get_result()
    stack = getattr(item, "funcargs", {}).get("platform_stack")
    if report.when == "call" and report.failed and isinstance(stack, PlatformStack):
        report.sections.append(("service logs", f"(whole logs in {stack.logs})\n{stack.describe()}"))


@dataclass
class Cli:
    """The `toex` command as a user runs it, logged in as one demo user."""

    env: dict[str, str]
    username: str = ""

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "toex_cli", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.username}: toex {' '.join(args)} exited {result.returncode}:\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result


def cli_factory(addresses: dict[str, str], nats_server, keycloak) -> Callable[[str], Cli]:
    """`make(username)`: a `toex` CLI logged in as that demo user, once per user."""
    made: dict[str, Cli] = {}

    def make(username: str) -> Cli:
        if username not in made:
            env = {
                **os.environ,
                "TOEX_CONFIG_DIR": tempfile.mkdtemp(prefix=f"toex-e2e-{username}-"),
                "TOEX_OIDC_ISSUER": keycloak.issuer,
                "TOEX_NATS_URL": nats_server.url,
                **addresses,
            }
            for name in ("TOEX_TOKEN", "TOEX_PURPOSE", "TOEX_FORMAT"):
                env.pop(name, None)
            cli = Cli(env, username)
            cli.run("login", "--username", username, "--password-stdin", stdin="toex-demo\n")
            made[username] = cli
        return made[username]

    return make


@pytest.fixture(scope="module")
def cli_for(tasking_process: ServiceProcess, nats_server, keycloak) -> Callable[[str], Cli]:
    return cli_factory({"TOEX_TASKING_ADDR": tasking_process.address}, nats_server, keycloak)


@pytest.fixture(scope="module")
def platform_cli_for(platform_stack: PlatformStack, nats_server, keycloak) -> Callable[[str], Cli]:
    return cli_factory(platform_stack.addresses(), nats_server, keycloak)
