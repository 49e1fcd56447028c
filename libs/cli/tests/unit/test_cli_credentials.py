import json
import stat
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qs

import httpx
import pytest
from cli_testkit import make_jwt
from click.testing import Result
from toex_cli import auth_commands
from toex_cli.credentials import (
    Credentials,
    CredentialStore,
    LoginRequired,
    OidcClient,
    TokenSource,
)

ISSUER = "http://127.0.0.1:8080/realms/toex"
NOW = 1_800_000_000.0


class FakeTokenEndpoint:
    """Keycloak's token endpoint as far as the CLI uses it; records every form posted."""

    def __init__(self, *, fail_with: tuple[int, dict[str, str]] | None = None) -> None:
        self.forms: list[dict[str, str]] = []
        self.urls: list[str] = []
        self.fail_with = fail_with
        self.issued = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.urls.append(str(request.url))
        form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
        self.forms.append(form)
        if self.fail_with:
            status, body = self.fail_with
            return httpx.Response(status, json=body)
        if request.url.path.endswith("/logout"):
            return httpx.Response(204)
        self.issued += 1
        username = form.get("username", "researcher.emsou")
        return httpx.Response(
            200,
            json={
                "access_token": make_jwt(preferred_username=username, n=self.issued),
                "expires_in": 300,
                "refresh_expires_in": 1800,
                "refresh_token": f"refresh-{self.issued}",
                "token_type": "Bearer",
            },
        )

    def client(self, issuer: str) -> OidcClient:
        return OidcClient(issuer, transport=httpx.MockTransport(self.handler))


def stored(expires_at: float, **overrides: object) -> Credentials:
    values: dict[str, object] = {
        "access_token": "old-access",
        "refresh_token": "old-refresh",
        "expires_at": expires_at,
        "issuer": ISSUER,
        "username": "researcher.emsou",
        "refresh_expires_at": NOW + 1000,
    }
    values.update(overrides)
    return Credentials(**values)  # type: ignore[arg-type]


def test_store_round_trip_is_private_to_the_owner(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "nested" / "credentials.json")
    credentials = stored(NOW + 300)
    store.save(credentials)
    assert store.load() == credentials
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.delete() is True
    assert store.load() is None
    assert store.delete() is False


def test_a_damaged_file_asks_for_a_new_login(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.path.write_text("{not json")
    with pytest.raises(LoginRequired, match="run `toex login`"):
        store.load()


def test_password_grant_posts_the_public_client_form() -> None:
    endpoint = FakeTokenEndpoint()
    credentials = endpoint.client(ISSUER + "/").password_grant("analyst.ersou", "s3cret", now=NOW)
    assert endpoint.urls == [f"{ISSUER}/protocol/openid-connect/token"]
    assert endpoint.forms == [
        {"grant_type": "password", "client_id": "toex-cli", "username": "analyst.ersou", "password": "s3cret"}
    ]
    assert credentials.expires_at == NOW + 300
    assert credentials.refresh_expires_at == NOW + 1800
    assert credentials.issuer == ISSUER
    assert credentials.username == "analyst.ersou"


def test_a_fresh_token_is_used_without_asking_the_identity_provider(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.save(stored(NOW + 31))
    endpoint = FakeTokenEndpoint()
    source = TokenSource(store, clock=lambda: NOW, oidc=endpoint.client)
    assert source.access_token() == "old-access"
    assert endpoint.forms == []


def test_a_token_within_30_seconds_of_expiry_is_refreshed_and_saved(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.save(stored(NOW + 29))
    endpoint = FakeTokenEndpoint()
    source = TokenSource(store, clock=lambda: NOW, oidc=endpoint.client)

    token = source.access_token()

    assert endpoint.forms == [
        {"grant_type": "refresh_token", "client_id": "toex-cli", "refresh_token": "old-refresh"}
    ]
    assert token != "old-access"
    saved = store.load()
    assert saved is not None
    assert (saved.access_token, saved.refresh_token) == (token, "refresh-1")
    assert saved.expires_at == NOW + 300
    assert saved.username == "researcher.emsou"
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_a_failed_refresh_says_to_log_in(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.save(stored(NOW - 5))
    endpoint = FakeTokenEndpoint(
        fail_with=(400, {"error": "invalid_grant", "error_description": "Session not active"})
    )
    source = TokenSource(store, clock=lambda: NOW, oidc=endpoint.client)
    with pytest.raises(LoginRequired, match=r"Session not active.*run `toex login`"):
        source.access_token()


def test_an_unreachable_identity_provider_also_says_to_log_in(tmp_path: Path) -> None:
    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    store = CredentialStore(tmp_path / "credentials.json")
    store.save(stored(NOW - 5))
    source = TokenSource(
        store,
        clock=lambda: NOW,
        oidc=lambda issuer: OidcClient(issuer, transport=httpx.MockTransport(unreachable)),
    )
    with pytest.raises(LoginRequired, match=r"cannot reach the identity provider.*run `toex login`"):
        source.access_token()


def test_an_expired_session_is_not_sent_to_the_identity_provider(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.save(stored(NOW - 5, refresh_expires_at=NOW - 1))
    endpoint = FakeTokenEndpoint()
    source = TokenSource(store, clock=lambda: NOW, oidc=endpoint.client)
    with pytest.raises(LoginRequired, match="session has expired; run `toex login`"):
        source.access_token()
    assert endpoint.forms == []


def test_not_logged_in(tmp_path: Path) -> None:
    source = TokenSource(CredentialStore(tmp_path / "credentials.json"))
    with pytest.raises(LoginRequired, match="not logged in; run `toex login`"):
        source.access_token()


def test_toex_token_overrides_the_stored_login(tmp_path: Path) -> None:
    store = CredentialStore(tmp_path / "credentials.json")
    store.save(stored(NOW - 5))
    source = TokenSource(store, env_token="from-env", clock=lambda: NOW, oidc=FakeTokenEndpoint().client)
    assert source.access_token() == "from-env"


@pytest.fixture
def endpoint(monkeypatch: pytest.MonkeyPatch) -> FakeTokenEndpoint:
    fake = FakeTokenEndpoint()
    monkeypatch.setattr(
        auth_commands,
        "OidcClient",
        lambda issuer, **kw: OidcClient(issuer, transport=httpx.MockTransport(fake.handler)),
    )
    return fake


def test_login_whoami_logout(
    run: Callable[..., Result], config_dir: Path, endpoint: FakeTokenEndpoint
) -> None:
    result = run("login", "--username", "researcher.emsou", "--password-stdin", input="pw with spaces\n")
    assert result.exit_code == 0, result.output
    assert "Logged in as researcher.emsou (EMSOU; roles: researcher)" in result.stdout
    assert endpoint.forms[0]["password"] == "pw with spaces"
    credentials_file = config_dir / "credentials.json"
    assert stat.S_IMODE(credentials_file.stat().st_mode) == 0o600
    assert json.loads(credentials_file.read_text())["issuer"] == ISSUER

    who = run("whoami", "--format", "json")
    assert who.exit_code == 0, who.output
    summary = json.loads(who.stdout)
    assert (summary["username"], summary["region"], summary["roles"]) == (
        "researcher.emsou",
        "EMSOU",
        ["researcher"],
    )

    table = run("whoami")
    assert "region:" in table.stdout and "EMSOU" in table.stdout

    out = run("logout")
    assert out.exit_code == 0
    assert endpoint.urls[-1] == f"{ISSUER}/protocol/openid-connect/logout"
    assert endpoint.forms[-1] == {"client_id": "toex-cli", "refresh_token": "refresh-1"}
    assert not credentials_file.exists()
    gone = run("whoami")
    assert gone.exit_code == 1
    assert "run `toex login`" in gone.stderr


def test_login_with_the_issuer_from_the_environment(
    run: Callable[..., Result], endpoint: FakeTokenEndpoint
) -> None:
    other = "http://127.0.0.1:18080/realms/toex"
    result = run(
        "login", "-u", "researcher.emsou", "--password-stdin", input="pw\n", env={"TOEX_OIDC_ISSUER": other}
    )
    assert result.exit_code == 0, result.output
    assert endpoint.urls == [f"{other}/protocol/openid-connect/token"]


def test_wrong_password_exits_1_with_advice(run: Callable[..., Result], endpoint: FakeTokenEndpoint) -> None:
    endpoint.fail_with = (401, {"error": "invalid_grant", "error_description": "Invalid user credentials"})
    result = run("login", "-u", "researcher.emsou", "--password-stdin", input="wrong\n")
    assert result.exit_code == 1
    assert "Invalid user credentials" in result.stderr
    assert "check the user name and password" in result.stderr


def test_password_stdin_needs_a_username(run: Callable[..., Result]) -> None:
    result = run("login", "--password-stdin", input="pw\n")
    assert result.exit_code == 2
    assert "--password-stdin needs --username" in result.stderr


def test_whoami_reads_toex_token(run: Callable[..., Result]) -> None:
    token = make_jwt(
        preferred_username="national_coordinator.national",
        region="NATIONAL",
        realm_access={"roles": ["national_coordinator", "offline_access"]},
        exp=int(time.time()) - 10,
    )
    result = run("whoami", env={"TOEX_TOKEN": token})
    assert result.exit_code == 0
    assert "national_coordinator.national" in result.stdout
    assert "NATIONAL" in result.stdout
    assert "(expired)" in result.stdout
    assert "$TOEX_TOKEN" in result.stdout
