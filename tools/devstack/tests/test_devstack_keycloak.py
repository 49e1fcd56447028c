"""The keycloak fixture and the realm in deploy/keycloak: tokens carry what the services rely on."""

import base64
import json
from typing import Any

import pytest
from toex_devstack import Keycloak, TokenError

pytestmark = pytest.mark.integration

ROLES = [
    "researcher",
    "analyst",
    "supervisor",
    "national_coordinator",
    "safeguarding_officer",
    "auditor",
    "admin",
]
DEMO_USERS = (
    [(f"{role}.{region.lower()}", region, role) for region in ("EMSOU", "ERSOU") for role in ROLES]
    + [
        (f"researcher.{region.lower()}", region, "researcher")
        for region in ("LONDON", "TARIAN", "SE", "SW", "NE", "NW", "YH", "ROCUWM")
    ]
    + [
        ("supervisor.rocuwm", "ROCUWM", "supervisor"),
        ("national_coordinator.national", "NATIONAL", "national_coordinator"),
    ]
)
SERVICE_CLIENTS = ["toex-tasking", "toex-entity", "toex-pnd", "toex-comms", "toex-safeguarding"]


def claims(token: str) -> dict[str, Any]:
    """The JWT payload, unverified: these tests check the realm's claims, not signatures."""
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


def audiences(payload: dict[str, Any]) -> list[str]:
    aud = payload.get("aud", [])
    return [aud] if isinstance(aud, str) else list(aud)


@pytest.mark.parametrize(("username", "region", "role"), DEMO_USERS, ids=[u for u, _, _ in DEMO_USERS])
def test_demo_user_token_carries_region_single_role_and_toex_audience(
    keycloak: Keycloak, username: str, region: str, role: str
) -> None:
    payload = claims(keycloak.password_token(username))
    assert payload["iss"] == keycloak.issuer
    assert payload["preferred_username"] == username
    assert payload["region"] == region
    assert payload["realm_access"]["roles"] == [role]
    assert "toex" in audiences(payload)
    assert payload["azp"] == "toex-cli"
    assert payload["exp"] - payload["iat"] == 300  # five minutes: a disabled user stops within them


@pytest.mark.parametrize("client_id", SERVICE_CLIENTS)
def test_service_client_token_is_a_national_service_identity(keycloak: Keycloak, client_id: str) -> None:
    payload = claims(keycloak.client_token(client_id))
    assert payload["iss"] == keycloak.issuer
    assert payload["azp"] == client_id
    assert payload["preferred_username"] == f"service-account-{client_id}"
    assert payload["realm_access"]["roles"] == ["service"]
    assert payload["region"] == "NATIONAL"
    assert "toex" in audiences(payload)


def test_wrong_password_gets_no_token(keycloak: Keycloak) -> None:
    with pytest.raises(TokenError) as refused:
        keycloak.password_token("researcher.emsou", "not-the-password")
    assert refused.value.status in (400, 401)
    assert "invalid_grant" in refused.value.body


def test_wrong_client_secret_gets_no_token(keycloak: Keycloak) -> None:
    with pytest.raises(TokenError) as refused:
        keycloak.client_token("toex-tasking", "wrong-secret")
    assert refused.value.status == 401


def test_people_cannot_log_in_through_a_service_client(keycloak: Keycloak) -> None:
    # Service clients allow client credentials only; the password grant must be refused.
    with pytest.raises(TokenError):
        keycloak.password_token("researcher.emsou", client_id="toex-tasking")
