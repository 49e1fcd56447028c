"""Finding 4: unthrottled password guessing.

The realm had brute-force detection off and no password policy, and the CLI's password grant
went to production. Now repeated failures lock an account for a while, weak passwords are
refused, people log in with the device authorization grant (`toex login --device`), and the
production realm the chart imports takes no passwords from the command line.
"""

from __future__ import annotations

import html
import re
import subprocess
import uuid
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
import yaml
from toex_cli.credentials import OidcClient, jwt_claims

from .conftest import keycloak_admin

STRONG = "correct-horse-battery-7"


@pytest.fixture
def person(keycloak: Any) -> Any:
    """A user of this test alone (failed logins must lock no one else's account)."""
    base, name = keycloak.base_url, f"guess-{uuid.uuid4().hex[:8]}"
    admin = f"{base}/admin/realms/toex"
    created = httpx.post(
        f"{admin}/users",
        json={
            "username": name,
            "enabled": True,
            "firstName": "Test",
            "lastName": "Person",
            "email": f"{name}@example.invalid",
            "emailVerified": True,
            "attributes": {"region": ["EMSOU"]},
            "credentials": [{"type": "password", "value": STRONG, "temporary": False}],
        },
        headers=keycloak_admin(base),
        timeout=30,
    )
    created.raise_for_status()
    user_id = created.headers["Location"].rsplit("/", 1)[-1]
    yield base, name, user_id
    httpx.delete(f"{admin}/users/{user_id}", headers=keycloak_admin(base), timeout=30)


def password_grant(base: str, username: str, password: str) -> int:
    return httpx.post(
        f"{base}/realms/toex/protocol/openid-connect/token",
        data={"grant_type": "password", "client_id": "toex-cli", "username": username, "password": password},
        timeout=30,
    ).status_code


def test_repeated_guesses_lock_the_account(person) -> None:  # type: ignore[no-untyped-def]
    base, name, _ = person
    assert password_grant(base, name, STRONG) == 200  # the account works to begin with
    for guess in range(6):
        assert password_grant(base, name, f"guess-{guess}") != 200
    # The right password no longer works while the account is locked.
    assert password_grant(base, name, STRONG) != 200


def test_weak_passwords_are_refused(person) -> None:  # type: ignore[no-untyped-def]
    base, _, user_id = person
    refused = httpx.put(
        f"{base}/admin/realms/toex/users/{user_id}/reset-password",
        json={"type": "password", "value": "abc", "temporary": False},
        headers=keycloak_admin(base),
        timeout=30,
    )
    assert refused.status_code == 400, refused.text


class Browser:
    """Just enough of a browser for Keycloak's device verification pages: follows redirects
    and keeps its cookies (which Keycloak marks Secure even on loopback http)."""

    def __init__(self) -> None:
        self.client = httpx.Client(timeout=30)
        self.cookies: dict[str, str] = {}

    def go(self, method: str, url: str, data: dict[str, str] | None = None) -> httpx.Response:
        for _ in range(10):
            response = self.client.request(
                method,
                url,
                data=data,
                headers={"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())},
            )
            for cookie in response.headers.get_list("set-cookie"):
                key, _, rest = cookie.partition("=")
                self.cookies[key.strip()] = rest.split(";")[0]
            if response.status_code in (301, 302, 303, 307) and "location" in response.headers:
                url, method, data = urljoin(url, response.headers["location"]), "GET", None
                continue
            return response
        raise AssertionError("too many redirects")

    def submit(self, page: httpx.Response, **fields: str) -> httpx.Response:
        action = re.search(r'<form[^>]*action="([^"]+)"', page.text)
        assert action, page.text[:500]
        hidden = dict(
            re.findall(r'<input[^>]*type="hidden"[^>]*name="([^"]+)"[^>]*value="([^"]*)"', page.text)
        )
        return self.go("POST", urljoin(str(page.url), html.unescape(action.group(1))), {**hidden, **fields})


def test_the_cli_logs_in_with_the_device_grant(keycloak: Any) -> None:
    oidc = OidcClient(keycloak.issuer)
    started = oidc.device_authorization()
    assert started.user_code and started.verification_uri.startswith(keycloak.base_url)
    # The person opens the address, logs in and approves, as in any browser.
    browser = Browser()
    login = browser.go("GET", started.verification_uri_complete)
    consent = browser.submit(login, username="researcher.emsou", password="toex-demo")
    if "accept" in consent.text:
        done = browser.submit(consent, accept="Yes")
    else:
        done = consent
    assert "Device Login Successful" in done.text or done.status_code == 200
    credentials = oidc.device_token(started, sleep=lambda _: None)
    assert credentials.username == "researcher.emsou"
    assert jwt_claims(credentials.access_token)["region"] == "EMSOU"


def test_the_production_realm_takes_no_password_grant(keycloak: Any) -> None:
    """The realm the hub's chart imports, rendered by helm, then imported as a copy."""
    from toex_deploycheck.checks import CHART, KUBE_VERSION, ensure_helm

    values = CHART.parent / "values" / "hub.yaml"
    rendered = subprocess.run(
        [
            ensure_helm(),
            "template",
            "toex-hub",
            str(CHART),
            "-f",
            str(values),
            "--kube-version",
            KUBE_VERSION,
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    imports = [d for d in yaml.safe_load_all(rendered) if d and d.get("kind") == "KeycloakRealmImport"]
    realm = imports[0]["spec"]["realm"]
    cli = next(c for c in realm["clients"] if c["clientId"] == "toex-cli")
    assert cli["directAccessGrantsEnabled"] is False
    assert cli["attributes"]["oauth2.device.authorization.grant.enabled"] == "true"
    assert realm["bruteForceProtected"] is True and "length(12)" in realm["passwordPolicy"]
    assert not [u for u in realm["users"] if not u["username"].startswith("service-account-")]
