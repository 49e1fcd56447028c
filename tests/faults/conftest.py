"""The fault tier: each cell of the fault matrix (a service under a fault) against real servers.

Keycloak and the session's PostgreSQL come from the devstack pytest plugin, as in the other
tiers. A test that stops or restarts a server does it to servers of its own, never to the
session's (other tests run against those): `broker` is a nats-server of the test's own, and
`restartable_postgres` a PostgreSQL cluster of this tier's own, restarted only by its tests.
`launch` runs a service in this process on a free port, migrated by an owning role and serving
as a runtime role, as in production; `spawn` runs one as its own process
(`python -m toex_<name> serve`, configured by TOEX_* variables as the local stack does), which a
test SIGKILLs and starts again. README.md holds the matrix: which cells exist and what each asserts.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from toex_common.events.outbox import OutboxRelay
from toex_common.migrations import migrate
from toex_common.testing.services import serve_in_process, stop_in_process
from toex_devstack._proc import DevstackError, free_port
from toex_devstack.keycloak import DemoTokens as Tokens
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres
from toex_devstack.stack import ServiceSpec as DevstackService
from toex_devstack.stack import service_environment

from .matrix import ServiceSpec


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/faults/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


# Roles are cluster-wide: every database of this tier is owned by one role and served by another.
OWNER_ROLE = "toex_fault_owner"
RUNTIME_ROLE = "toex_fault_app"
# The relay gives up waiting for the stream's acknowledgement after this long and publishes
# again. Production waits 5 s; a second lets a short outage produce the repeated publishes the
# stream must de-duplicate, so each outage here lasts seconds, not tens of them.
RELAY_PUBLISH_TIMEOUT = 1.0


@pytest.fixture(scope="session")
def tokens(keycloak: Any) -> Tokens:
    return Tokens(keycloak)


@contextlib.contextmanager
def nats_server_of_its_own() -> Iterator[NatsServer]:
    """A nats-server on a free port with a temporary store, stopped and removed afterwards."""
    store = Path(tempfile.mkdtemp(prefix="toex-fault-nats-"))
    server = NatsServer(store_dir=store)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture
def broker() -> Iterator[NatsServer]:
    """A nats-server of this test's own, which it may stop."""
    with nats_server_of_its_own() as server:
        yield server


@pytest.fixture(scope="module")
def module_broker() -> Iterator[NatsServer]:
    """A nats-server shared by a module's tests, each of which leaves it running: a module whose
    tests stop it defines `broker` as this one, so `launch` and `spawn` use it too."""
    with nats_server_of_its_own() as server:
        yield server


# Runs pg_ctl for RestartablePostgres: one command a line (start, stop, restart), answers "ok".
_PG_CTL_HELPER = """
import sys
from toex_devstack.postgres import Postgres

cluster = Postgres(port=int(sys.argv[1]), data_dir=sys.argv[2], fsync=False)
for line in sys.stdin:
    try:
        getattr(cluster, line.strip())()
        print("ok", flush=True)
    except Exception as exc:
        print("error: " + " ".join(str(exc).split()), flush=True)
"""


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid` (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # /proc/<pid>/stat: "pid (command) state ppid ..."; the command may hold spaces.
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


class RestartablePostgres(Postgres):
    """A PostgreSQL cluster (fsync off) started, stopped and restarted by a helper process.

    pg_ctl runs as another system user, so starting it forks this process; a fork made while
    gRPC threads are busy (a burst of calls under way) can crash the child before it runs
    pg_ctl. The helper, started before any call, does the forking instead."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir=data_dir, fsync=False)
        self._helper = subprocess.Popen(
            [sys.executable, "-c", _PG_CTL_HELPER, str(self.port), str(data_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def _ask(self, command: str) -> None:
        assert self._helper.stdin is not None and self._helper.stdout is not None
        self._helper.stdin.write(command + "\n")
        self._helper.stdin.flush()
        answer = self._helper.stdout.readline().strip()
        if answer != "ok":
            raise DevstackError(f"PostgreSQL {command}: {answer or 'the helper process exited'}")

    def start(self, timeout: float = 60.0, progress: Any = None) -> None:
        self._ask("start")

    def stop(self, timeout: float = 60.0) -> None:
        self._ask("stop")

    def restart(self, timeout: float = 60.0) -> None:
        self._ask("restart")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The cluster's processes stopped (SIGSTOP) and resumed afterwards: a database that
        accepts connections and answers nothing, as behind a network partition or a stalled
        disk, rather than one that refuses them."""
        postmaster = self.pid
        assert postmaster is not None, "the cluster is not running"
        os.kill(postmaster, signal.SIGSTOP)  # first, so it starts no process the list would miss
        processes = [postmaster, *children_of(postmaster)]
        for pid in processes[1:]:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in processes:
                os.kill(pid, signal.SIGCONT)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            assert self._helper.stdin is not None
            self._helper.stdin.close()
            self._helper.wait(30)


@pytest.fixture(scope="module")
def restartable_postgres() -> Iterator[RestartablePostgres]:
    """A PostgreSQL cluster of this tier's own, which its tests restart."""
    data_dir = Path(tempfile.mkdtemp(prefix="toex-fault-pg-"))
    cluster = RestartablePostgres(data_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        try:
            cluster.close()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


class Caller:
    """What a test needs of a service it calls, however the service runs."""

    spec: ServiceSpec
    stub: Any
    tokens: Tokens
    postgres: Postgres
    database: str  # its database's name; the test reads it as the superuser (`dsn`)

    @property
    def dsn(self) -> str:
        return self.postgres.dsn(self.database)

    def md(self, username: str | None = None, purpose: str = "Op FAULTLINE") -> list[tuple[str, str]]:
        return [
            ("authorization", f"Bearer {self.tokens[username or self.spec.user]}"),
            ("x-toex-purpose", purpose),
        ]


@dataclass
class Service(Caller):
    spec: ServiceSpec
    app: Any
    channel: grpc.aio.Channel
    stub: Any
    tokens: Tokens
    postgres: Postgres
    database: str
    stopped: bool = False

    async def stop(self) -> None:
        """Stop serving and shut down (each piece of background work finishes what it does)."""
        if self.stopped:
            return
        self.stopped = True
        await self.channel.close()
        await stop_in_process(self.app)
        # A drain fails while the broker is away; never leave a client reconnecting after the test.
        with contextlib.suppress(Exception):
            await self.app.nc.close()


Launch = Callable[..., Awaitable[Service]]


@pytest.fixture
async def launch(keycloak: Any, tokens: Tokens, broker: NatsServer) -> AsyncIterator[Launch]:
    """Start a service of `ServiceSpec` in this process on `postgres` (in a new database, or in
    `database` again) and the NATS at `nats_url`; `prepare(app)` runs before its background work
    starts. Every service is stopped (before the test's `broker` is) and its database dropped
    after the test."""
    started: list[Service] = []
    databases: list[tuple[Postgres, str]] = []

    async def launch_service(
        spec: ServiceSpec,
        *,
        postgres: Postgres,
        nats_url: str,
        database: str | None = None,
        prepare: Callable[[Any], None] | None = None,
        **settings: Any,
    ) -> Service:
        if database is None:
            database = f"fault_{spec.name}_{uuid.uuid4().hex[:10]}"
            databases.append((postgres, database))
        roles = await asyncio.to_thread(
            postgres.service_database, database, owner=OWNER_ROLE, runtime=RUNTIME_ROLE
        )

        def prepared(app: Any) -> None:
            app.relay = OutboxRelay(
                app.engine, app.platform.js, poll_seconds=0.2, publish_timeout=RELAY_PUBLISH_TIMEOUT
            )
            if prepare is not None:
                prepare(app)

        app = await serve_in_process(
            spec.package,
            database_url=roles.runtime_url,
            migration_database_url=roles.migration_url,
            nats_url=nats_url,
            oidc_issuer=keycloak.issuer,
            prepare=prepared,
            **{**spec.settings, **settings},
        )
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
        service = Service(spec, app, channel, spec.stub(channel), tokens, postgres, database)
        started.append(service)
        return service

    yield launch_service
    for service in reversed(started):
        with contextlib.suppress(Exception):
            await service.stop()
    for postgres, name in databases:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(postgres.drop_database, name)


# `python -m <package> serve`, every consumer's acknowledgement wait (30 s in production) cut to
# TOEX_FAULTS_ACK_WAIT_SECONDS, as the in-process tests set `consumer._ack_wait`: the events a
# killed process fetched and never acknowledged are delivered again seconds later, not 30 s.
_SERVE_WITH_ACK_WAIT = """
import os
import runpy
import sys

from toex_common.events import consumer

ack_wait = float(os.environ["TOEX_FAULTS_ACK_WAIT_SECONDS"])
build = consumer.IdempotentConsumer.__init__


def with_ack_wait(self, **config):
    build(self, **{**config, "ack_wait_seconds": ack_wait})


consumer.IdempotentConsumer.__init__ = with_ack_wait
runpy.run_module(sys.argv.pop(1), run_name="__main__", alter_sys=True)
"""

# A channel to a process that is killed and started again reconnects within half a second.
_CHANNEL_OPTIONS = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


@dataclass
class ServiceProcess(Caller):
    """A service as its own process (`python -m toex_<name> serve`, configured by TOEX_*
    variables as the local stack does), which a test kills and starts again on the same
    database, broker and port. `stub` is bound to the process started last."""

    spec: ServiceSpec
    tokens: Tokens
    postgres: Postgres
    database: str
    port: int
    env: dict[str, str]
    logs: Path  # a log file per start: <name>-<n>.log
    ack_wait: float | None = None
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.aio.Channel | None = None
    stub: Any = None
    starts: int = 0

    @property
    def log(self) -> Path:
        return self.logs / f"{self.spec.name}-{self.starts}.log"

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def command(self) -> list[str]:
        if self.ack_wait is None:
            return [sys.executable, "-m", self.spec.package, "serve"]
        return [sys.executable, "-c", _SERVE_WITH_ACK_WAIT, self.spec.package, "serve"]

    async def start(self, timeout: float = 60.0) -> None:
        """Start a process (another, after a kill) and wait until its health answers SERVING."""
        assert not self.running, "the previous process is still running"
        self.starts += 1
        with self.log.open("ab") as sink:
            # No preexec_fn: without one the child is spawned without running Python code
            # between fork and exec, which a process with busy gRPC threads cannot safely do.
            self.proc = await asyncio.to_thread(
                subprocess.Popen, self.command(), env=self.env, stdout=sink, stderr=subprocess.STDOUT
            )
        if self.channel is not None:
            await self.channel.close()
        self.channel = self.connect()
        self.stub = self.spec.stub(self.channel)
        health = health_pb2_grpc.HealthStub(self.channel)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.spec.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            with contextlib.suppress(grpc.aio.AioRpcError):
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                if answer.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            if loop.time() > deadline:
                raise RuntimeError(f"{self.spec.name} not serving after {timeout} s:\n{self.log_tail()}")
            await asyncio.sleep(0.1)

    def connect(self) -> grpc.aio.Channel:
        """A channel to the service's port: to whichever process serves there, across restarts."""
        return grpc.aio.insecure_channel(f"127.0.0.1:{self.port}", options=_CHANNEL_OPTIONS)

    def kill(self) -> None:
        """SIGKILL: nothing after this instant runs (no shutdown, no drain, no acknowledgement)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    async def stop(self) -> None:
        """SIGTERM, as Kubernetes stops a pod; SIGKILL if it does not exit in 30 s."""
        if self.running:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self.channel is not None:
            await self.channel.close()
            self.channel = None


def settings_env(settings: dict[str, Any]) -> dict[str, str]:
    """Settings as the TOEX_* variables the service's config reads."""
    return {f"TOEX_{name.upper()}": str(value) for name, value in settings.items()}


Spawn = Callable[..., Awaitable[ServiceProcess]]


@pytest.fixture
async def spawn(keycloak: Any, tokens: Tokens, broker: NatsServer) -> AsyncIterator[Spawn]:
    """Start a service of `ServiceSpec` as its own process on `postgres` (a new database,
    migrated by the owning role as `launch` does) and the NATS at `nats_url`; `ack_wait` cuts
    its consumers' acknowledgement wait. Every process is stopped (before the test's `broker`
    is) and its database dropped after the test."""
    started: list[ServiceProcess] = []
    databases: list[tuple[Postgres, str]] = []
    logs = Path(tempfile.mkdtemp(prefix="toex-fault-logs-"))

    async def spawn_service(
        spec: ServiceSpec,
        *,
        postgres: Postgres,
        nats_url: str,
        ack_wait: float | None = None,
        **settings: Any,
    ) -> ServiceProcess:
        database = f"fault_{spec.name}_{uuid.uuid4().hex[:10]}"
        databases.append((postgres, database))
        roles = await asyncio.to_thread(
            postgres.service_database, database, owner=OWNER_ROLE, runtime=RUNTIME_ROLE
        )
        main = importlib.import_module(f"{spec.package}.__main__")
        await asyncio.to_thread(migrate, roles.runtime_url, roles.migration_url, main.migrations_dir())
        port = free_port()
        client = "toex-" + spec.package.removeprefix("toex_").replace("_", "-")
        env = {
            **os.environ,
            **service_environment(
                DevstackService(spec.name, spec.package, port, database, client),
                database_url=roles.runtime_url,
                migration_database_url=roles.migration_url,
                nats_url=nats_url,
                oidc_issuer=keycloak.issuer,
            ),
            "TOEX_OUTBOX_POLL_SECONDS": "0.2",
            "TOEX_LOG_LEVEL": "WARNING",
            **settings_env({**spec.settings, **settings}),
        }
        if ack_wait is not None:
            env["TOEX_FAULTS_ACK_WAIT_SECONDS"] = str(ack_wait)
        service = ServiceProcess(spec, tokens, postgres, database, port, env, logs, ack_wait)
        started.append(service)
        await service.start()
        return service

    yield spawn_service
    for service in reversed(started):
        with contextlib.suppress(Exception):
            await service.stop()
    for postgres, name in databases:
        with contextlib.suppress(Exception):
            await asyncio.to_thread(postgres.drop_database, name)
    shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture
def pnd_url() -> Iterator[str]:
    """The PND simulator as its own process (python -m toex_pnd.simulator); its URL."""
    port = free_port()
    data_dir = Path(tempfile.mkdtemp(prefix="toex-fault-pnd-"))
    log = (data_dir / "simulator.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "toex_pnd.simulator", "--port", str(port), "--data-dir", str(data_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the PND simulator did not start")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)
