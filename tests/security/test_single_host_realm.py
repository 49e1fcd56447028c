"""Finding 12 (compose): the single host imported the demo realm, as the local stack does.

docker-compose.yml, documented as fit for a small unit, imported realm-toex.json: two dozen demo
users with a known password, the CLI's password grant, and client secrets published in the
repository. It now imports realm-toex-single-host.json (made from the demo realm by
deploy/keycloak/single_host_realm.py): service accounts only, device login only, and client
secrets that Keycloak takes from its environment. This starts a real Keycloak on that file,
with the environment compose gives it, and tries what the demo realm allowed.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from toex_devstack.keycloak import DEMO_PASSWORD, Keycloak, TokenError, service_client_secret

REALM = Path(__file__).resolve().parents[2] / "deploy" / "keycloak" / "realm-toex-single-host.json"
SERVICES = ("tasking", "entity", "pnd", "comms", "safeguarding")
SECRETS = {f"TOEX_{s.upper()}_CLIENT_SECRET": f"{s}-secret-from-the-environment" for s in SERVICES}


@pytest.fixture(scope="module")
def single_host_keycloak() -> Iterator[Keycloak]:
    home = Path(tempfile.mkdtemp(prefix="toex-kc-single-host-"))
    server = Keycloak(home_dir=home, realm_file=REALM, env=SECRETS)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


def test_no_demo_user_logs_in_with_a_password(single_host_keycloak: Keycloak) -> None:
    for username in ("researcher.emsou", "national_coordinator.national", "admin.emsou"):
        with pytest.raises(TokenError) as refused:
            single_host_keycloak.password_token(username, DEMO_PASSWORD)
        assert refused.value.status in (400, 401)


def test_people_log_in_with_the_device_grant(single_host_keycloak: Keycloak) -> None:
    response = httpx.post(
        f"{single_host_keycloak.issuer}/protocol/openid-connect/auth/device",
        data={"client_id": "toex-cli"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.json()["user_code"]


def test_client_secrets_come_from_the_environment_not_the_repository(single_host_keycloak: Keycloak) -> None:
    for service in SERVICES:
        client = f"toex-{service}"
        with pytest.raises(TokenError):
            single_host_keycloak.client_token(client, service_client_secret(client))
        assert single_host_keycloak.client_token(client, SECRETS[f"TOEX_{service.upper()}_CLIENT_SECRET"])
