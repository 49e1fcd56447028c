"""Fixtures for the CLI tests: a fake tasking server on a free port, and a runner for `toex`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cli_testkit import FakeTasking
from click.testing import CliRunner, Result
from toex.tasking.v1 import tasking_pb2_grpc
from toex_cli.main import main


@pytest.fixture
def tasking() -> Iterator[tuple[FakeTasking, str]]:
    fake = FakeTasking()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    tasking_pb2_grpc.add_TaskingServiceServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    return tmp_path / "config"


@pytest.fixture
def run(config_dir: Path) -> Callable[..., Result]:
    """Invoke `toex ARGS` with a private config dir; `env` adds or (with None) removes variables."""

    def invoke(*args: str, env: dict[str, str | None] | None = None, input: str | None = None) -> Result:
        base: dict[str, str | None] = {
            "TOEX_CONFIG_DIR": str(config_dir),
            "TOEX_TOKEN": None,
            "TOEX_PURPOSE": None,
            "TOEX_FORMAT": None,
            "TOEX_TASKING_ADDR": None,
            "TOEX_NATS_URL": None,
            "TOEX_OIDC_ISSUER": None,
            "TOEX_INSTALLATIONS": None,
        }
        base.update(env or {})
        return CliRunner().invoke(main, list(args), env=base, input=input, catch_exceptions=False)

    return invoke
