"""The federation tier: the national hub and the EMSOU and LONDON installations, as
`make up-federation` runs them (toex_devstack.federation), started once for the tier on free
loopback ports: three nats-servers of the generated configurations joined as leaf nodes (EMSOU's
link through a relay the tests can cut), one PostgreSQL with every installation's databases, the
session's Keycloak (`TOEX_TEST_KEYCLOAK_URL` reuses a running one), and each installation's
services as `python -m toex_<service> serve` processes with TOEX_INSTALLATION and TOEX_REGION.

The tests drive it as people do, with the `toex` CLI and the federation's directory of
installations, and look underneath with the installations' own NATS users and databases.
"""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import grpc
import nats
import pytest
from click.testing import CliRunner, Result
from toex.oversight.v1 import oversight_pb2 as opb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.type.v1 import region_pb2
from toex_cli.main import main as toex_main
from toex_devstack.federation import Federation, FederationPorts, local_ports
from toex_devstack.keycloak import DemoTokens
from toex_devstack.postgres import PASSWORD, USER
from toex_devstack.stack import find_repo_root, load_services

T = TypeVar("T")

COORDINATOR = "national_coordinator.national"
PURPOSE = "Op Federation"
# Events leave a service's outbox every 0.2 s (1 s by default), so a test waits less.
FAST = {"TOEX_OUTBOX_POLL_SECONDS": "0.2"}
# An upper bound for an event to cross the federation (a passing test takes a second or two).
CROSSING_SECONDS = 45.0


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/federation/" in str(item.fspath):
            item.add_marker(pytest.mark.federation)
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="package")
def federation(keycloak: Any) -> Iterator[Federation]:
    """The federation, started once for the tier and stopped after it."""
    root = find_repo_root(Path(__file__).parent)
    state = Path(tempfile.mkdtemp(prefix="toex-test-federation-"))
    state.chmod(0o755)  # PostgreSQL runs as an unprivileged user when the tests run as root
    said: list[str] = []
    running = Federation(
        root,
        state_dir=state,
        ports=FederationPorts.free(local_ports(load_services(root))),
        keycloak_url=keycloak.base_url,
        cuttable=("EMSOU",),
        extra_env=FAST,
        fsync=False,
        echo=said.append,
    )
    atexit.register(running.down)
    started = time.monotonic()
    try:
        code = running.up()
    except Exception:
        running.down()
        raise
    if code != 0:
        running.down()
        pytest.fail("the federation did not start:\n" + "\n".join(said[-60:]), pytrace=False)
    print(f"\nfederation started in {time.monotonic() - started:.1f} s ({state})")
    try:
        yield running
    finally:
        for link in running.links.values():
            link.restore()
        running.down()
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="package")
def tokens(keycloak: Any) -> DemoTokens:
    return DemoTokens(keycloak)


Toex = Callable[..., Result]


@pytest.fixture
def toex(federation: Federation, tokens: DemoTokens, tmp_path: Path) -> Toex:
    """`toex ARGS` as `user`, with the federation's directory of installations (or, with
    directory=False, none: the local stack's addresses, unless `env` names others)."""

    def invoke(
        user: str, *args: str, directory: bool = True, env: dict[str, str | None] | None = None
    ) -> Result:
        base: dict[str, str | None] = {
            "TOEX_CONFIG_DIR": str(tmp_path),
            "TOEX_TOKEN": tokens[user],
            "TOEX_PURPOSE": PURPOSE,
            "TOEX_FORMAT": None,
            "TOEX_INSTALLATIONS": str(federation.directory_file) if directory else "none",
            "TOEX_NATS_URL": None,
            "TOEX_OIDC_ISSUER": None,
        }
        base.update({f"TOEX_{s.upper()}_ADDR": None for s in SERVICES})
        base.update(env or {})
        return CliRunner().invoke(toex_main, list(args), env=base, catch_exceptions=False)

    return invoke


SERVICES = ("tasking", "entity", "pnd", "comms", "safeguarding", "oversight")


def md(token: str, purpose: str | None = PURPOSE) -> list[tuple[str, str]]:
    items = [("authorization", f"Bearer {token}")]
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


def channel(federation: Federation, member: str, service: str) -> grpc.Channel:
    return grpc.insecure_channel(
        federation.service_address(member, service), options=[("grpc.enable_http_proxy", 0)]
    )


def overview(federation: Federation, tokens: DemoTokens, region: str) -> opb.RegionFigures:
    """The hub's figures of one region (every day counted), as the national coordinator reads them."""
    with channel(federation, "hub", "oversight") as chan:
        answer = oversight_pb2_grpc.OversightServiceStub(chan).GetOverview(
            opb.GetOverviewRequest(regions=[region_pb2.Region.Value(f"REGION_{region}")]),
            metadata=md(tokens[COORDINATOR]),
            timeout=30,
        )
    (figures,) = answer.regions
    return figures


def eventually(check: Callable[[], T | None], what: str, timeout: float = CROSSING_SECONDS) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def run(coro: Awaitable[T]) -> T:
    return asyncio.run(coro)  # type: ignore[arg-type]


def dsn(federation: Federation, database: str) -> str:
    port = federation.federation_ports().postgres
    return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/{database}"


def databases(federation: Federation, member: str) -> list[str]:
    """Every database of an installation's services."""
    held = federation.load_state()["members"][member]["services"]
    return [entry["database"] for entry in held.values() if "database" in entry]


async def fetch(federation: Federation, database: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn(federation, database))
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def subject_counts(federation: Federation, member: str, stream: str, subjects: str) -> dict[str, int]:
    """How many messages each subject matching `subjects` has in `member`'s stream (admin)."""
    nc = await nats.connect(federation.nats_url(member, "admin"), max_reconnect_attempts=0)
    try:
        info = await nc.jetstream().stream_info(stream, subjects_filter=subjects)
        return dict(info.state.subjects or {})
    except nats.js.errors.NotFoundError:
        return {}
    finally:
        await nc.close()
