"""The fault tier: each cell of the fault matrix (a service under a fault) against real servers.

Keycloak and the session's PostgreSQL come from the devstack pytest plugin, as in the other
tiers. A test that stops or restarts a server does it to servers of its own, never to the
session's (other tests run against those): `broker` is a nats-server of the test's own, and
`restartable_postgres` a PostgreSQL cluster of this tier's own, restarted only by its tests.
`launch` runs a service in this process on a free port, migrated by an owning role and serving
as a runtime role, as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
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
from toex_common.events.outbox import OutboxRelay
from toex_common.testing.services import serve_in_process, stop_in_process
from toex_devstack._proc import DevstackError, free_port
from toex_devstack.keycloak import DemoTokens as Tokens
from toex_devstack.nats import NatsServer
from toex_devstack.postgres import Postgres

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


@pytest.fixture
def broker() -> Iterator[NatsServer]:
    """A nats-server of this test's own (free port, temporary store), which it may stop."""
    store = Path(tempfile.mkdtemp(prefix="toex-fault-nats-"))
    server = NatsServer(store_dir=store)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


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


@dataclass
class Service:
    spec: ServiceSpec
    app: Any
    channel: grpc.aio.Channel
    stub: Any
    tokens: Tokens
    postgres: Postgres
    database: str  # its database's name; the test reads it as the superuser (`dsn`)
    stopped: bool = False

    @property
    def dsn(self) -> str:
        return self.postgres.dsn(self.database)

    def md(self, username: str | None = None, purpose: str = "Op FAULTLINE") -> list[tuple[str, str]]:
        return [
            ("authorization", f"Bearer {self.tokens[username or self.spec.user]}"),
            ("x-toex-purpose", purpose),
        ]

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
