"""`toex` over two real tasking installations: EMSOU's and LONDON's, each `python -m toex_tasking
serve` with TOEX_INSTALLATION=region, its own database and its own nats-server (as each region of
the federation has), on free loopback ports, with real Keycloak tokens of the demo users. A
directory of installations names them, and the national hub's address answers nothing.

What it proves: each call reaches the installation of the region it names; an every-region list
gathers both and names the one that did not answer (exit code 3); a London researcher works an
EMSOU job at EMSOU's installation with their own token; and without the directory, a region
installation's WRONG_INSTALLATION refusal tells the user where to go."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from toex_devstack.keycloak import DemoTokens
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_devstack.stack import ServiceSpec, grpc_serving, service_environment

pytestmark = pytest.mark.integration

STARTUP_SECONDS = 90
COORDINATOR = "national_coordinator.national"
LONDON_RESEARCHER = "researcher.london"


@dataclass
class Installation:
    region: str
    proc: subprocess.Popen[bytes]
    port: int
    log: Path
    broker: NatsServer

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.broker.stop()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(region: str, postgres: Postgres, keycloak: Any, logs: Path) -> Installation:
    broker = NatsServer(store_dir=Path(tempfile.mkdtemp(prefix=f"toex-cli-{region.lower()}-nats-")))
    broker.start()
    name = f"cli_{region.lower()}_{uuid.uuid4().hex[:8]}"
    database = postgres.service_database(name, owner=f"{name}_owner", runtime=f"{name}_app")
    port = _free_port()
    env = {
        **os.environ,
        **service_environment(
            ServiceSpec(
                name="tasking", module="toex_tasking", port=port, database=name, client_id="toex-tasking"
            ),
            database_url=database.runtime_url,
            migration_database_url=database.migration_url,
            nats_url=broker.url,
            oidc_issuer=keycloak.issuer,
        ),
        "TOEX_INSTALLATION": "region",
        "TOEX_REGION": region,
        "TOEX_LOG_LEVEL": "WARNING",
        "PYTHONUNBUFFERED": "1",
    }
    log = logs / f"tasking-{region.lower()}.log"
    migrated = subprocess.run(
        [sys.executable, "-m", "toex_tasking", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if migrated.returncode != 0:
        broker.stop()
        raise RuntimeError(f"tasking migrate for {region} failed:\n{migrated.stdout}\n{migrated.stderr}")
    with open(log, "ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "toex_tasking", "serve"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    installation = Installation(region, proc, port, log, broker)
    deadline = time.monotonic() + STARTUP_SECONDS
    while not grpc_serving(port, timeout=1):
        if proc.poll() is not None or time.monotonic() > deadline:
            installation.stop()
            raise RuntimeError(
                f"tasking for {region} did not start:\n{log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.3)
    return installation


@dataclass
class Federation:
    emsou: Installation
    london: Installation
    directory: Path
    hub_address: str


@pytest.fixture(scope="module")
def federation(postgres: Postgres, keycloak: Any) -> Iterator[Federation]:
    logs = Path(tempfile.mkdtemp(prefix="toex-cli-federation-"))
    started: list[Installation] = []
    try:
        started.append(_start("EMSOU", postgres, keycloak, logs))
        started.append(_start("LONDON", postgres, keycloak, logs))
        emsou, london = started
        hub = f"127.0.0.1:{_free_port()}"  # nothing listens: the hub is down
        directory = logs / "installations.toml"
        directory.write_text(
            f'[installations.EMSOU]\ntasking = "{emsou.address}"\n'
            f'[installations.LONDON]\ntasking = "{london.address}"\n'
            f'[installations.hub]\ntasking = "{hub}"\n',
            encoding="utf-8",
        )
        yield Federation(emsou, london, directory, hub)
    finally:
        for installation in started:
            installation.stop()
        shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture(scope="module")
def tokens(keycloak: Any) -> DemoTokens:
    return DemoTokens(keycloak)


Toex = Callable[..., Result]


@pytest.fixture
def toex(run: Callable[..., Result], federation: Federation, tokens: DemoTokens) -> Toex:
    def invoke(
        user: str, *args: str, directory: bool = True, env: dict[str, str | None] | None = None
    ) -> Result:
        base: dict[str, str | None] = {
            "TOEX_TOKEN": tokens[user],
            "TOEX_PURPOSE": "Op Kestrel",
            "TOEX_INSTALLATIONS": str(federation.directory) if directory else "none",
        }
        base.update(env or {})
        return run(*args, env=base)

    return invoke


def create_job(toex: Toex, region: str) -> str:
    result = toex(
        COORDINATOR,
        "jobs", "create", "--region", region, "--type", "comms_analysis", "--unit", "Test Unit",
        "--officer", "DS Test", "--operation", f"Op {uuid.uuid4().hex[:6]}", "--due", "2030-01-01",
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    name = json.loads(result.stdout)["name"]
    assert name.startswith(f"regions/{region}/jobs/")
    return str(name)


def test_each_job_is_made_and_read_at_its_regions_installation(toex: Toex, federation: Federation) -> None:
    emsou_job, london_job = create_job(toex, "EMSOU"), create_job(toex, "LONDON")

    for name in (emsou_job, london_job):
        shown = toex(COORDINATOR, "jobs", "show", name, "--format", "json")
        assert shown.exit_code == 0, shown.output
        assert json.loads(shown.stdout)["name"] == name

    # Asked directly, each installation holds its own region's job only.
    at_london = toex(
        COORDINATOR, "jobs", "list", "--region", "LONDON", "--all", "--format", "json", directory=False,
        env={"TOEX_TASKING_ADDR": federation.london.address},
    )  # fmt: skip
    assert at_london.exit_code == 0, at_london.output
    names = {job["name"] for job in json.loads(at_london.stdout).get("jobs", [])}
    assert london_job in names and emsou_job not in names


def test_every_region_gathers_both_installations_and_names_the_hub_that_did_not_answer(
    toex: Toex, federation: Federation
) -> None:
    emsou_job, london_job = create_job(toex, "EMSOU"), create_job(toex, "LONDON")

    result = toex(COORDINATOR, "jobs", "list", "--region", "-", "--all")

    assert result.exit_code == 3, result.output
    listed = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert emsou_job in listed and london_job in listed
    assert listed.index(london_job) < listed.index(emsou_job)  # newest first across installations
    assert "NATIONAL: not answered (UNAVAILABLE" in result.stderr
    assert f"[installation hub, {federation.hub_address}]" in result.stderr
    assert "Partial answer: 2 of 3 installations answered" in result.stderr


def test_a_london_researcher_works_an_emsou_job_at_emsous_installation(toex: Toex) -> None:
    emsou_job = create_job(toex, "EMSOU")
    assigned = toex(COORDINATOR, "jobs", "assign", emsou_job, LONDON_RESEARCHER)
    assert assigned.exit_code == 0, assigned.output

    shown = toex(LONDON_RESEARCHER, "jobs", "show", emsou_job, "--format", "json")
    assert shown.exit_code == 0, shown.output
    assert LONDON_RESEARCHER in [a["username"] for a in json.loads(shown.stdout)["assignees"]]
    moved = toex(LONDON_RESEARCHER, "jobs", "status", emsou_job, "in_progress")
    assert moved.exit_code == 0, moved.output

    # Their every-region list has it, from EMSOU's installation.
    mine = toex(LONDON_RESEARCHER, "jobs", "list", "--all", "--format", "json")
    assert mine.exit_code == 3, mine.output  # the hub is down
    assert emsou_job in [job["name"] for job in json.loads(mine.stdout)["jobs"]]


def test_without_the_directory_a_region_installation_says_where_to_go(
    toex: Toex, federation: Federation
) -> None:
    emsou_job = create_job(toex, "EMSOU")

    result = toex(
        COORDINATOR, "jobs", "show", emsou_job, directory=False,
        env={"TOEX_TASKING_ADDR": federation.london.address},
    )  # fmt: skip

    assert result.exit_code == 1
    assert "FAILED_PRECONDITION" in result.stderr
    assert "reason WRONG_INSTALLATION (toex)" in result.stderr
    assert "precondition INSTALLATION on regions/EMSOU" in result.stderr
    assert (
        "Hint: EMSOU is served by installation EMSOU: list it in an installations directory" in result.stderr
    )
