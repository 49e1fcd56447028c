"""The PND sync service over real PostgreSQL, NATS and Keycloak, talking to the PND simulator
running as its own process (python -m toex_pnd.simulator)."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from toex.pnd.v1 import pnd_pb2_grpc
from toex_common.migrations import upgrade
from toex_devstack.keycloak import DemoTokens as Tokens
from toex_pnd.__main__ import migrations_dir
from toex_pnd.bootstrap import App, build
from toex_pnd.config import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Simulator:
    """The simulator process: start, stop (SIGTERM or SIGKILL) and start again on the same port
    and data directory, so its records survive like a real system's."""

    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.data_dir = data_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / "simulator.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "toex_pnd.simulator",
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"simulator did not start: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(10)
        self.proc = None

    def control(self, **faults: Any) -> None:
        httpx.put(f"{self.url}/control/v1", json=faults, timeout=5).raise_for_status()

    def bump(self, source_ref: str, version: int) -> None:
        """As if another organisation changed the record on the PND."""
        httpx.post(
            f"{self.url}/admin/v1/bump", json={"source_ref": source_ref, "version": version}, timeout=5
        ).raise_for_status()

    def applied(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/admin/v1/applied", timeout=30).json()["applied"])

    def stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.url}/admin/v1/stats", timeout=5).json())


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    with tempfile.TemporaryDirectory(prefix="toex-pnd-sim-") as tmp:
        sim = Simulator(Path(tmp))
        sim.start()
        try:
            yield sim
        finally:
            sim.stop(signal.SIGKILL)


@pytest.fixture(scope="session")
def tokens(keycloak: Any) -> Tokens:
    return Tokens(keycloak)


@dataclass
class Running:
    app: App | None
    channel: grpc.aio.Channel
    stub: pnd_pb2_grpc.PndSyncServiceStub
    tokens: Tokens
    simulator: Simulator
    database: str

    def md(self, username: str, purpose: str | None = "Op SANDPIPER") -> list[tuple[str, str]]:
        items = [("authorization", f"Bearer {self.tokens[username]}")]
        if purpose:
            items.append(("x-toex-purpose", purpose))
        return items


def settings_for(database: str, nats_url: str, issuer: str, pnd_url: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database,
        "nats_url": nats_url,
        "oidc_issuer": issuer,
        "grpc_port": 0,
        "pnd_url": pnd_url,
        "pnd_timeout_seconds": 5.0,
        "dispatch_poll_seconds": 0.1,
        "retry_base_seconds": 0.2,
        "retry_cap_seconds": 1.0,
        "reconcile_interval_seconds": 0,
        "outbox_poll_seconds": 0.2,
    }
    values.update(extra)
    return Settings(**values)


@pytest.fixture
async def pnd(
    database: str, nats_server: Any, keycloak: Any, tokens: Tokens, simulator: Simulator
) -> AsyncIterator[Running]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    app = await build(settings_for(database, nats_server.url, keycloak.issuer, simulator.url))
    await app.server.start()
    await app.start_background()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.port}")
    yield Running(app, channel, pnd_pb2_grpc.PndSyncServiceStub(channel), tokens, simulator, database)
    await channel.close()
    await app.server.stop(1)
    await app.shutdown()


def service_env(database: str, nats_url: str, issuer: str, pnd_url: str, port: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "TOEX_DATABASE_URL": database,
            "TOEX_NATS_URL": nats_url,
            "TOEX_OIDC_ISSUER": issuer,
            "TOEX_GRPC_PORT": str(port),
            "TOEX_PND_URL": pnd_url,
            "TOEX_DISPATCH_POLL_SECONDS": "0.1",
            "TOEX_RETRY_BASE_SECONDS": "0.2",
            "TOEX_RETRY_CAP_SECONDS": "1.0",
            "TOEX_RECONCILE_INTERVAL_SECONDS": "0",
            "TOEX_OUTBOX_POLL_SECONDS": "0.2",
            "TOEX_LOG_LEVEL": "WARNING",
        }
    )
    return env
