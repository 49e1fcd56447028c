"""pytest fixtures that run real servers on free loopback ports (loaded via the pytest11 entry point).

Session-scoped: ``nats_server`` (NatsServer), ``postgres`` (Postgres, fsync off), ``keycloak``
(Keycloak with the toex realm; set TOEX_TEST_KEYCLOAK_URL=http://127.0.0.1:8080 to reuse a running one,
e.g. `make up`'s). Function-scoped: ``database``, a fresh empty database's asyncpg URL.

A server that cannot start fails the tests that need it, with the reason; nothing is skipped.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from ._proc import DevstackError
from .keycloak import Keycloak, remove_home
from .nats import NatsServer
from .postgres import Postgres

REALM_RELATIVE = Path("deploy/keycloak/realm-toex.json")
KEYCLOAK_URL_ENV = "TOEX_TEST_KEYCLOAK_URL"
REALM_FILE_ENV = "TOEX_KEYCLOAK_REALM_FILE"


def _cannot_start(what: str, exc: Exception) -> NoReturn:
    pytest.fail(f"{what} could not be started for the integration tests:\n{exc}", pytrace=False)


def find_realm_file(start: Path) -> Path:
    """$TOEX_KEYCLOAK_REALM_FILE, else deploy/keycloak/realm-toex.json above ``start`` or this package."""
    override = os.environ.get(REALM_FILE_ENV)
    if override:
        return Path(override)
    for base in (start.resolve(), Path(__file__).resolve()):
        for candidate in (base, *base.parents):
            if (candidate / REALM_RELATIVE).is_file():
                return candidate / REALM_RELATIVE
    raise DevstackError(f"{REALM_RELATIVE} not found above {start}; set {REALM_FILE_ENV}")


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsServer]:
    """nats-server with JetStream on a free loopback port and a temporary store."""
    store = Path(tempfile.mkdtemp(prefix="toex-test-nats-"))
    server = NatsServer(store_dir=store)
    atexit.register(server.stop)
    try:
        server.start()
    except DevstackError as exc:
        shutil.rmtree(store, ignore_errors=True)
        _cannot_start("nats-server", exc)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(store, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL cluster (fsync off) on a free loopback port; superuser toex/toex."""
    data_dir = Path(tempfile.mkdtemp(prefix="toex-test-pg-"))
    try:
        cluster = Postgres(data_dir=data_dir, fsync=False)
        atexit.register(cluster.stop)
        cluster.start()
    except DevstackError as exc:
        shutil.rmtree(data_dir, ignore_errors=True)
        _cannot_start("PostgreSQL", exc)
    try:
        yield cluster
    finally:
        try:
            cluster.stop()
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def keycloak(request: pytest.FixtureRequest) -> Iterator[Keycloak]:
    """Keycloak with the toex realm: its own instance, or the one at $TOEX_TEST_KEYCLOAK_URL."""
    external = os.environ.get(KEYCLOAK_URL_ENV)
    if external:
        server = Keycloak.external(external)
        if not server.ready():
            pytest.fail(
                f"{KEYCLOAK_URL_ENV}={external} but no Keycloak with realm toex answers there "
                f"(start it with `make up`, or unset {KEYCLOAK_URL_ENV} to let the tests start their own)",
                pytrace=False,
            )
        yield server
        return
    home = Path(tempfile.mkdtemp(prefix="toex-test-kc-"))
    try:
        server = Keycloak(home_dir=home, realm_file=find_realm_file(request.config.rootpath))
        atexit.register(server.stop)
        server.start(timeout=300)
    except DevstackError as exc:
        remove_home(home)
        _cannot_start("Keycloak", exc)
    try:
        yield server
    finally:
        server.stop()
        remove_home(home)


@pytest.fixture
def database(postgres: Postgres, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, uniquely named database on the session cluster; its SQLAlchemy asyncpg URL."""
    stem = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:30]
    name = f"t_{stem}_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(name)
    try:
        yield url
    finally:
        postgres.drop_database(name)
