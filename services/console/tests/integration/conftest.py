"""Real Keycloak (the console's client made from the realm file when the running realm predates
it), a real tasking service (PostgreSQL, nats-server), and the console in-process over ASGI."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from toex.tasking.v1 import tasking_pb2_grpc
from toex_common.migrations import upgrade
from toex_console.app import create_app
from toex_console.config import Settings
from toex_devstack.keycloak import DemoTokens, Keycloak
from toex_safeguarding.__main__ import migrations_dir as safeguarding_migrations
from toex_safeguarding.bootstrap import build as build_safeguarding
from toex_safeguarding.config import Settings as SafeguardingSettings
from toex_tasking.__main__ import migrations_dir
from toex_tasking.bootstrap import build
from toex_tasking.config import Settings as TaskingSettings

REALM_FILE = Path(__file__).resolve().parents[4] / "deploy" / "keycloak" / "realm-toex.json"
CLIENT_ID = "toex-console"
PUBLIC_URL = "http://127.0.0.1:8090"


def console_client_definition() -> dict:
    realm = json.loads(REALM_FILE.read_text())
    return next(c for c in realm["clients"] if c["clientId"] == CLIENT_ID)


def admin_headers(keycloak: Keycloak, http: httpx.Client) -> dict[str, str]:
    admin = http.post(
        f"{keycloak.base_url}/realms/master/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "admin-cli",
            "username": keycloak.admin_user,
            "password": keycloak.admin_password,
        },
    )
    admin.raise_for_status()
    return {"Authorization": f"Bearer {admin.json()['access_token']}"}


def ensure_console_client(keycloak: Keycloak, extra_redirect: str = "") -> str:
    """The realm file's `toex-console` client in the running realm (created through the admin
    API if the realm was imported before the client existed); its secret. `extra_redirect`
    registers one more exact redirect URI (a console started by a test on a free port)."""
    definition = console_client_definition()
    with httpx.Client(timeout=30) as http:
        headers = admin_headers(keycloak, http)
        clients = f"{keycloak.base_url}/admin/realms/toex/clients"
        found = http.get(clients, params={"clientId": CLIENT_ID}, headers=headers)
        found.raise_for_status()
        if not found.json():
            http.post(clients, json=definition, headers=headers).raise_for_status()
            found = http.get(clients, params={"clientId": CLIENT_ID}, headers=headers)
        client = found.json()[0]
        if extra_redirect and extra_redirect not in client.get("redirectUris", []):
            client["redirectUris"] = [*client.get("redirectUris", []), extra_redirect]
            http.put(f"{clients}/{client['id']}", json=client, headers=headers).raise_for_status()
    return str(definition["secret"])


@pytest.fixture(scope="session")
def console_secret(keycloak: Keycloak) -> str:
    return ensure_console_client(keycloak)


@pytest.fixture(scope="session")
def tokens(keycloak: Keycloak) -> DemoTokens:
    return DemoTokens(keycloak)


@pytest.fixture
async def tasking_addr(database: str, nats_server, keycloak: Keycloak) -> AsyncIterator[str]:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    app = await build(
        TaskingSettings(
            database_url=database,
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
            grpc_port=0,
            service_client_secret="toex-tasking-local-secret",
            outbox_poll_seconds=0.2,
        )
    )
    await app.server.start()
    await app.start_background()
    yield f"127.0.0.1:{app.port}"
    await app.server.stop(1)
    await app.shutdown()


@pytest.fixture
async def safeguarding_addr(
    postgres, nats_server, keycloak: Keycloak, tasking_addr: str
) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    """A real safeguarding service (its own database) asking the test's tasking about jobs."""
    name = f"t_console_sg_{uuid.uuid4().hex[:10]}"
    url = postgres.create_database(name)
    await asyncio.to_thread(upgrade, url, safeguarding_migrations())
    app = await build_safeguarding(
        SafeguardingSettings(
            service_name=f"safeguarding-{uuid.uuid4().hex[:8]}",
            database_url=url,
            nats_url=nats_server.url,
            oidc_issuer=keycloak.issuer,
            grpc_port=0,
            service_client_secret="toex-safeguarding-local-secret",
            tasking_address=tasking_addr,
            outbox_poll_seconds=0.2,
        )
    )
    await app.server.start()
    await app.start_background()
    yield f"127.0.0.1:{app.port}"
    await app.server.stop(1)
    await app.shutdown()
    postgres.drop_database(name)


@pytest.fixture
def tasking_stub(tasking_addr: str) -> tasking_pb2_grpc.TaskingServiceStub:
    return tasking_pb2_grpc.TaskingServiceStub(grpc.aio.insecure_channel(tasking_addr))


@pytest.fixture
async def console(
    keycloak: Keycloak, console_secret: str, tasking_addr: str
) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(
        oidc_issuer=keycloak.issuer,
        console_client_secret=console_secret,
        public_url=PUBLIC_URL,
        tasking_addr=tasking_addr,
    )
    app = create_app(settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=PUBLIC_URL) as client:
        client.app = app  # type: ignore[attr-defined]
        yield client
