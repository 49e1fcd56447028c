"""Fast checks of the realm file and the services list, without starting any server."""

import json
from pathlib import Path
from typing import Any

import pytest
from toex_devstack import DevstackError
from toex_devstack import keycloak as keycloak_module
from toex_devstack.pytest_plugin import find_realm_file
from toex_devstack.stack import ServiceSpec, find_repo_root, load_services, service_environment

ROLES = {
    "researcher",
    "analyst",
    "supervisor",
    "national_coordinator",
    "safeguarding_officer",
    "auditor",
    "admin",
}
REGIONS = {"EMSOU", "ERSOU", "ROCUWM", "LONDON", "TARIAN", "SE", "SW", "NE", "NW", "YH", "NATIONAL"}


@pytest.fixture(scope="module")
def realm() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(find_realm_file(Path(__file__)).read_text())
    return data


def test_every_person_holds_exactly_the_role_and_region_in_their_name(realm: dict[str, Any]) -> None:
    people = [u for u in realm["users"] if "serviceAccountClientId" not in u]
    assert len(people) == 24
    for user in people:
        role, region = user["username"].split(".")
        assert user["realmRoles"] == [role] and role in ROLES
        assert user["attributes"]["region"] == [region.upper()] and region.upper() in REGIONS
        assert user["emailVerified"] and user["firstName"] and user["lastName"]
        assert user["credentials"] == [{"type": "password", "value": "toex-demo", "temporary": False}]


def test_every_client_puts_region_and_toex_audience_into_access_tokens(realm: dict[str, Any]) -> None:
    for client in realm["clients"]:
        mappers = {m["protocolMapper"]: m["config"] for m in client["protocolMappers"]}
        assert mappers["oidc-usermodel-attribute-mapper"]["claim.name"] == "region"
        assert mappers["oidc-usermodel-attribute-mapper"]["access.token.claim"] == "true"
        assert mappers["oidc-audience-mapper"]["included.custom.audience"] == "toex"
        assert {"profile", "roles", "basic"} <= set(client["defaultClientScopes"])


def test_service_clients_allow_client_credentials_only(realm: dict[str, Any]) -> None:
    # The two clients people sign in through: the CLI's (public) and the console's.
    services = [c for c in realm["clients"] if c["clientId"] not in ("toex-cli", "toex-console")]
    assert {c["clientId"] for c in services} == {
        "toex-tasking",
        "toex-entity",
        "toex-pnd",
        "toex-comms",
        "toex-safeguarding",
    }
    accounts = {u["serviceAccountClientId"]: u for u in realm["users"] if "serviceAccountClientId" in u}
    for client in services:
        assert client["serviceAccountsEnabled"] and not client["publicClient"]
        assert not (
            client["standardFlowEnabled"]
            or client["directAccessGrantsEnabled"]
            or client["implicitFlowEnabled"]
        )
        assert client["secret"] == f"{client['clientId']}-local-secret"
        account = accounts[client["clientId"]]
        assert account["realmRoles"] == ["service"] and account["attributes"]["region"] == ["NATIONAL"]


def test_console_client_is_confidential_code_flow_with_pkce_only(realm: dict[str, Any]) -> None:
    (console,) = [c for c in realm["clients"] if c["clientId"] == "toex-console"]
    assert not console["publicClient"] and console["standardFlowEnabled"]
    assert not (
        console["directAccessGrantsEnabled"]
        or console["implicitFlowEnabled"]
        or console["serviceAccountsEnabled"]
    )
    assert console["attributes"]["pkce.code.challenge.method"] == "S256"
    assert console["redirectUris"] == ["http://127.0.0.1:8090/auth/callback"]
    assert console["secret"] == "toex-console-local-secret"
    assert "audience-toex" in {m["name"] for m in console["protocolMappers"]}


def test_user_profile_declares_region_so_keycloak_keeps_it(realm: dict[str, Any]) -> None:
    (provider,) = realm["components"]["org.keycloak.userprofile.UserProfileProvider"]
    profile = json.loads(provider["config"]["kc.user.profile.config"][0])
    (region,) = [a for a in profile["attributes"] if a["name"] == "region"]
    assert set(region["validations"]["options"]["options"]) == REGIONS
    assert region["permissions"]["edit"] == ["admin"], "people must not change their own region"


def test_services_file_lists_tasking(tmp_path: Path) -> None:
    root = find_repo_root(Path(__file__).parent)
    specs = {s.name: s for s in load_services(root)}
    assert specs["tasking"] == ServiceSpec("tasking", "toex_tasking", 50051, "toex_tasking", "toex-tasking")


def test_repo_root_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    (tmp_path / "deploy" / "devstack").mkdir(parents=True)
    (tmp_path / "deploy" / "devstack" / "services.toml").write_text("")
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_repo_root(tmp_path / "a" / "b") == tmp_path.resolve()
    assert load_services(tmp_path) == []


def test_service_environment_names_everything_a_service_needs() -> None:
    spec = ServiceSpec("tasking", "toex_tasking", 50051, "toex_tasking", "toex-tasking")
    env = service_environment(
        spec,
        database_url="postgresql+asyncpg://toex_tasking_app:toex@127.0.0.1:5432/toex_tasking",
        migration_database_url="postgresql+asyncpg://toex_tasking:toex@127.0.0.1:5432/toex_tasking",
        nats_url="nats://127.0.0.1:4222",
        oidc_issuer="http://127.0.0.1:8080/realms/toex",
    )
    assert env == {
        "TOEX_INSTALLATION": "single",
        "TOEX_DATABASE_URL": "postgresql+asyncpg://toex_tasking_app:toex@127.0.0.1:5432/toex_tasking",
        "TOEX_MIGRATION_DATABASE_URL": "postgresql+asyncpg://toex_tasking:toex@127.0.0.1:5432/toex_tasking",
        "TOEX_NATS_URL": "nats://127.0.0.1:4222",
        "TOEX_OIDC_ISSUER": "http://127.0.0.1:8080/realms/toex",
        "TOEX_OIDC_AUDIENCE": "toex",
        "TOEX_GRPC_HOST": "127.0.0.1",
        "TOEX_GRPC_PORT": "50051",
        "TOEX_SERVICE_CLIENT_ID": "toex-tasking",
        "TOEX_SERVICE_CLIENT_SECRET": "toex-tasking-local-secret",
        "TOEX_LOG_LEVEL": "INFO",
    }


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))
    monkeypatch.setattr(keycloak_module.glob, "glob", lambda pattern: [])
    with pytest.raises(DevstackError, match=r"Java 21 or newer.*install a JDK >= 21"):
        keycloak_module.find_java_home()


def test_old_java_is_not_accepted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    jdk = tmp_path / "temurin-17-jdk-amd64"
    (jdk / "bin").mkdir(parents=True)
    (jdk / "bin" / "java").write_text("")
    (jdk / "release").write_text('JAVA_VERSION="17.0.9"\n')
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.setattr(keycloak_module.glob, "glob", lambda pattern: [str(jdk)])
    with pytest.raises(DevstackError):
        keycloak_module.find_java_home()
    (jdk / "release").write_text('JAVA_VERSION="21.0.2"\n')
    assert keycloak_module.find_java_home() == jdk


def test_missing_maven_says_what_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOEX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(keycloak_module.shutil, "which", lambda name: None)
    with pytest.raises(DevstackError, match=r"apt-get install maven"):
        keycloak_module.ensure_distribution()


def test_the_console_is_a_web_entry_started_after_the_services() -> None:
    from toex_devstack.stack import find_repo_root, load_web

    (console,) = [w for w in load_web(find_repo_root(Path(__file__))) if w["name"] == "console"]
    assert console["module"] == "toex_console" and console["port"] == 8090
    assert console["health"] == "http://127.0.0.1:8090/healthz"
    assert console["env"]["TOEX_TASKING_ADDR"] == "127.0.0.1:50051"
