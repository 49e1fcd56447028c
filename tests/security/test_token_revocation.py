"""Finding 9: revocation and key rotation took effect only when tokens expired.

The realm's signing keys were fetched once (and again only for an unknown key id), and a
verified token was remembered until it expired, so a key retired after a leak went on
verifying the tokens it had signed. Now the key set is fetched on a schedule and a token whose
key is gone is refused; access tokens live five minutes, so a disabled user stops within them.

The test rotates the keys of a copy of the toex realm (the session's realm is shared by every
test), exactly as an operator would in the admin console: a new key provider, the old removed.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from toex.entity.v1 import entity_pb2 as pb
from toex_cli.credentials import jwt_claims

from .conftest import keycloak_admin, md

REALM_FILE = Path(__file__).resolve().parents[2] / "deploy" / "keycloak" / "realm-toex.json"


def user_token(base: str, realm: str, username: str) -> str:
    response = httpx.post(
        f"{base}/realms/{realm}/protocol/openid-connect/token",
        data={
            "grant_type": "password",
            "client_id": "toex-cli",
            "username": username,
            "password": "toex-demo",
        },
        timeout=30,
    )
    response.raise_for_status()
    return str(response.json()["access_token"])


@pytest.fixture
def realm_copy(keycloak: Any) -> Any:
    base = keycloak.base_url
    name = f"toex-rotation-{uuid.uuid4().hex[:8]}"
    realm = json.loads(REALM_FILE.read_text())
    realm["realm"] = name
    headers = keycloak_admin(base)
    httpx.post(f"{base}/admin/realms", json=realm, headers=headers, timeout=120).raise_for_status()
    yield base, name
    httpx.delete(f"{base}/admin/realms/{name}", headers=keycloak_admin(base), timeout=60)


def rotate_keys(base: str, realm: str) -> None:
    """A new RSA key provider takes over; every provider that signed before is removed."""
    headers = keycloak_admin(base)
    admin = f"{base}/admin/realms/{realm}"
    old = httpx.get(
        f"{admin}/components", params={"type": "org.keycloak.keys.KeyProvider"}, headers=headers
    ).json()
    realm_id = httpx.get(admin, headers=headers).json()["id"]
    httpx.post(
        f"{admin}/components",
        json={
            "name": "rotated",
            "providerId": "rsa-generated",
            "providerType": "org.keycloak.keys.KeyProvider",
            "parentId": realm_id,
            "config": {"priority": ["500"], "keySize": ["2048"], "algorithm": ["RS256"]},
        },
        headers=headers,
    ).raise_for_status()
    for component in old:
        if component["providerId"].startswith("rsa"):
            httpx.delete(f"{admin}/components/{component['id']}", headers=headers).raise_for_status()


async def test_a_retired_key_stops_its_tokens(realm_copy, launch) -> None:  # type: ignore[no-untyped-def]
    base, realm = realm_copy
    from toex.entity.v1 import entity_pb2_grpc

    entity = await launch(
        "toex_entity",
        entity_pb2_grpc.EntityResolutionServiceStub,
        issuer=f"{base}/realms/{realm}",
        jwks_refresh_seconds=1.0,
    )
    old = user_token(base, realm, "researcher.emsou")
    claims = jwt_claims(old)
    assert claims["exp"] - claims["iat"] <= 300  # access tokens live five minutes at most
    search = pb.SearchEntitiesRequest(name="Nobody Anywhere")
    await entity.stub.SearchEntities(search, metadata=md(old))  # verified, and remembered

    rotate_keys(base, realm)
    await asyncio.sleep(3)  # a few scheduled refreshes

    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await entity.stub.SearchEntities(search, metadata=md(old))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    fresh = user_token(base, realm, "researcher.emsou")
    await entity.stub.SearchEntities(search, metadata=md(fresh))
