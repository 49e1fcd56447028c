"""The tasking service as users run it: `python -m toex_tasking migrate` then `serve` as its own
process, driven with the `toex` CLI and raw gRPC, over the real servers from the devstack fixtures."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from toex_devstack._proc import free_port
from toex_devstack.stack import ServiceSpec, grpc_serving, service_environment

pytestmark = pytest.mark.e2e


@dataclass
class ServiceProcess:
    proc: subprocess.Popen[bytes]
    port: int
    env: dict[str, str]
    log: Path

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start_service(env: dict[str, str], log: Path, port: int) -> ServiceProcess:
    with open(log, "ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toex_tasking", "serve"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while not grpc_serving(port, timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"tasking did not start:\n{log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.3)
    return ServiceProcess(proc, port, env, log)


@pytest.fixture(scope="module")
def tasking_process(postgres, nats_server, keycloak) -> Iterator[ServiceProcess]:
    port = free_port()
    # Migrated by the owning role, served by a runtime role that can only append to the audit log.
    name = f"e2e_tasking_{os.getpid()}"
    database = postgres.service_database(name, owner=f"{name}_owner", runtime=f"{name}_app")
    spec = ServiceSpec(
        name="tasking", module="toex_tasking", port=port, database="", client_id="toex-tasking"
    )
    env = {
        **os.environ,
        **service_environment(
            spec,
            database_url=database.runtime_url,
            migration_database_url=database.migration_url,
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
        ),
        "TOEX_OVERDUE_SCAN_SECONDS": "1",
        "TOEX_OUTBOX_POLL_SECONDS": "0.2",
    }
    subprocess.run(
        [sys.executable, "-m", "toex_tasking", "migrate"], env=env, check=True, capture_output=True
    )
    log = Path(tempfile.mkdtemp(prefix="toex-e2e-")) / "tasking.log"
    service = start_service(env, log, port)
    yield service
    if service.proc.poll() is None:
        service.proc.terminate()
        service.proc.wait(30)


@dataclass
class Cli:
    """The `toex` command as a user runs it, logged in as one demo user."""

    env: dict[str, str]

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
                f"toex {' '.join(args)} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result


@pytest.fixture(scope="module")
def cli_for(tasking_process: ServiceProcess, nats_server, keycloak):
    made: dict[str, Cli] = {}

    def make(username: str) -> Cli:
        if username not in made:
            env = {
                **os.environ,
                "TOEX_CONFIG_DIR": tempfile.mkdtemp(prefix=f"toex-e2e-{username}-"),
                "TOEX_OIDC_ISSUER": keycloak.issuer,
                "TOEX_TASKING_ADDR": tasking_process.address,
                "TOEX_NATS_URL": nats_server.url,
            }
            env.pop("TOEX_TOKEN", None)
            cli = Cli(env)
            cli.run("login", "--username", username, "--password-stdin", stdin="toex-demo\n")
            made[username] = cli
        return made[username]

    return make
