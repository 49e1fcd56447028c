"""Finding 2: one national service identity for every installation.

Every service account had role `service` and region NATIONAL, and role `service` saw every
region, so one leaked regional client secret read every region. A service identity now sees
every region only when it is the hub's (region NATIONAL); a region installation's service
client, as the chart's realm gives each installation, sees its own region alone. The test
makes such a client (`toex-entity-ersou-...`) the way the realm defines one, and reads with it.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from toex.entity.v1 import entity_pb2 as pb
from toex.type.v1 import security_pb2

from .conftest import keycloak_admin, md

REALM_FILE = Path(__file__).resolve().parents[2] / "deploy" / "keycloak" / "realm-toex.json"


@pytest.fixture
def ersou_service_token(keycloak: Any) -> Any:
    """A token of an ERSOU installation's entity service client."""
    base = keycloak.base_url
    api = f"{base}/admin/realms/toex"
    template = next(
        c for c in json.loads(REALM_FILE.read_text())["clients"] if c["clientId"] == "toex-entity"
    )
    client_id, secret = f"toex-entity-ersou-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    client = {**template, "clientId": client_id, "secret": secret, "name": client_id}
    client.pop("id", None)
    httpx.post(f"{api}/clients", json=client, headers=keycloak_admin(base), timeout=30).raise_for_status()
    internal = httpx.get(
        f"{api}/clients", params={"clientId": client_id}, headers=keycloak_admin(base)
    ).json()[0]["id"]
    user = httpx.get(f"{api}/clients/{internal}/service-account-user", headers=keycloak_admin(base)).json()
    user["attributes"] = {"region": ["ERSOU"]}
    httpx.put(f"{api}/users/{user['id']}", json=user, headers=keycloak_admin(base)).raise_for_status()
    role = httpx.get(f"{api}/roles/service", headers=keycloak_admin(base)).json()
    httpx.post(
        f"{api}/users/{user['id']}/role-mappings/realm", json=[role], headers=keycloak_admin(base)
    ).raise_for_status()
    token = httpx.post(
        f"{base}/realms/toex/protocol/openid-connect/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
        timeout=30,
    )
    token.raise_for_status()
    yield token.json()["access_token"]
    httpx.delete(f"{api}/clients/{internal}", headers=keycloak_admin(base), timeout=30)


def person(given: str, surname: str, birth_date: str) -> pb.SourceRecord:
    return pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system="niche", source_record_id=uuid.uuid4().hex),
        grading=pb.Grading(
            source_evaluation=pb.SOURCE_EVALUATION_2,
            intelligence_assessment=pb.INTELLIGENCE_ASSESSMENT_B,
            handling=security_pb2.HANDLING_CODE_P,
        ),
        person=pb.Person(given_name=given, surname=surname, birth_date=birth_date),
    )


async def test_a_regional_service_identity_reads_its_region_only(entity, ersou_service_token) -> None:  # type: ignore[no-untyped-def]
    tag = uuid.uuid4().hex[:8]
    held = {}
    # Two people nothing alike, so each is an entity of one region.
    for region, record in (
        ("EMSOU", person("Tova", f"Aardvark{tag}", "1977-07-17")),
        ("ERSOU", person("Bram", f"Zeppelin{tag}", "1952-12-03")),
    ):
        held[region] = await entity.stub.ResolveRecord(
            pb.ResolveRecordRequest(parent=f"regions/{region}", record=record),
            metadata=entity.md("national_coordinator.national"),
        )
    service = md(ersou_service_token)
    own = await entity.stub.GetEntity(pb.GetEntityRequest(name=held["ERSOU"].entity.name), metadata=service)
    assert [r.name for r in own.entity.records] == [held["ERSOU"].record.name]
    with pytest.raises(grpc.aio.AioRpcError) as other:
        await entity.stub.GetEntity(pb.GetEntityRequest(name=held["EMSOU"].entity.name), metadata=service)
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
    # The hub's service identity (region NATIONAL) still sees every region.
    hub = md(entity.tokens._keycloak.client_token("toex-entity"))
    seen = await entity.stub.GetEntity(pb.GetEntityRequest(name=held["EMSOU"].entity.name), metadata=hub)
    assert seen.entity.records


def test_the_chart_gives_each_installation_its_own_service_clients() -> None:
    """What the hub's realm import defines, and what a region's services log in as."""
    import subprocess

    import yaml
    from toex_deploycheck.checks import CHART, KUBE_VERSION, ensure_helm

    def render(values: str) -> list[dict[str, Any]]:
        out = subprocess.run(
            [
                *(ensure_helm(), "template", "t", str(CHART)),
                *("-f", str(CHART.parent / "values" / values), "--kube-version", KUBE_VERSION),
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]

    realm = next(d for d in render("hub.yaml") if d["kind"] == "KeycloakRealmImport")["spec"]["realm"]
    regions = {
        u["serviceAccountClientId"]: u["attributes"]["region"]
        for u in realm["users"]
        if u.get("serviceAccountClientId")
    }
    assert regions["toex-entity"] == ["NATIONAL"]
    assert regions["toex-entity-ersou"] == ["ERSOU"] and regions["toex-tasking-emsou"] == ["EMSOU"]
    assert len([c for c in regions if c.startswith("toex-entity-")]) == 10
    env = [
        e["value"]
        for d in render("ersou.yaml")
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if e["name"] == "TOEX_SERVICE_CLIENT_ID"
    ]
    assert env and all(v.endswith("-ersou") for v in env)


# What the tasking service's directory needs and nothing more: users and their realm roles
# (view-users), and who holds a realm role (view-realm).
DIRECTORY_RIGHTS = {"view-users", "view-realm"}


def test_the_tasking_client_may_read_the_directory_and_do_nothing_else(keycloak: Any) -> None:
    realm = json.loads(REALM_FILE.read_text())
    account = next(u for u in realm["users"] if u["username"] == "service-account-toex-tasking")
    assert set(account["clientRoles"]["realm-management"]) == DIRECTORY_RIGHTS
    others = [u for u in realm["users"] if u["username"].startswith("service-account-") and u is not account]
    assert others and not any(u.get("clientRoles") for u in others), "other services read no directory"

    token = keycloak.client_token("toex-tasking")
    headers = {"Authorization": f"Bearer {token}"}
    api = f"{keycloak.base_url}/admin/realms/toex"
    # What AssignJob needs: a user by name, their realm roles, the researchers.
    found = httpx.get(
        f"{api}/users", params={"username": "researcher.emsou", "exact": "true"}, headers=headers
    )
    assert found.status_code == 200 and found.json()
    user = found.json()[0]["id"]
    assert httpx.get(f"{api}/users/{user}/role-mappings/realm", headers=headers).status_code == 200
    assert httpx.get(f"{api}/roles/researcher/users", headers=headers).status_code == 200
    # Nothing that changes the directory, reads client secrets or login events.
    refused = [
        httpx.post(f"{api}/users", json={"username": f"planted-{uuid.uuid4().hex[:6]}"}, headers=headers),
        httpx.put(f"{api}/users/{user}", json={"attributes": {"region": ["ERSOU"]}}, headers=headers),
        httpx.post(
            f"{api}/users/{user}/role-mappings/realm",
            json=[{"name": "supervisor"}],
            headers=headers,
        ),
        httpx.get(f"{api}/clients", headers=headers),
        httpx.get(f"{api}/events", headers=headers),
        httpx.post(f"{api}/users/{user}/logout", headers=headers),
    ]
    assert [r.status_code for r in refused] == [403] * len(refused)
