"""Logging in to Keycloak with the public `toex-cli` client, and keeping the tokens.

Tokens live in `<user config dir>/toex/credentials.json` (mode 0600), or under $TOEX_CONFIG_DIR.
A command asks `TokenSource.access_token()`, which returns $TOEX_TOKEN when set (for scripts),
otherwise the stored token, refreshed first when it expires within 30 seconds.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import platformdirs

CLIENT_ID = "toex-cli"
DEFAULT_ISSUER = "http://127.0.0.1:8080/realms/toex"
ISSUER_ENV = "TOEX_OIDC_ISSUER"
TOKEN_ENV = "TOEX_TOKEN"
CONFIG_DIR_ENV = "TOEX_CONFIG_DIR"
REFRESH_MARGIN_SECONDS = 30.0

LOGIN_HINT = "run `toex login`"


class LoginRequired(Exception):
    """There is no usable token; the message says why and ends with what to do."""


class OidcError(Exception):
    """The identity provider refused or could not be reached."""

    def __init__(self, message: str, error: str = "", *, unreachable: bool = False) -> None:
        super().__init__(message)
        self.error = error
        self.unreachable = unreachable


@dataclass(frozen=True)
class DeviceAuthorization:
    """What the identity provider answers when a device login starts."""

    device_code: str
    user_code: str
    verification_uri: str
    verification_uri_complete: str
    expires_in: float
    interval: float


@dataclass(frozen=True)
class Credentials:
    access_token: str
    refresh_token: str
    expires_at: float  # seconds since the epoch
    issuer: str
    username: str
    refresh_expires_at: float | None = None  # None: unknown or never (offline tokens)

    def expires_within(self, seconds: float, now: float) -> bool:
        return now + seconds >= self.expires_at

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Credentials:
        refresh_expires = data.get("refresh_expires_at")
        return cls(
            access_token=str(data["access_token"]),
            refresh_token=str(data.get("refresh_token") or ""),
            expires_at=float(data["expires_at"]),
            issuer=str(data["issuer"]),
            username=str(data.get("username") or ""),
            refresh_expires_at=float(refresh_expires) if refresh_expires else None,
        )


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, NOT verified: for display and defaults only, never for decisions."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT (expected three dot-separated parts)")
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload))
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not a JWT: {exc}") from None
    if not isinstance(claims, dict):
        raise ValueError("not a JWT: the payload is not a JSON object")
    return claims


def credentials_from_response(
    body: Mapping[str, Any], *, issuer: str, username: str, now: float, previous: Credentials | None = None
) -> Credentials:
    """Build stored credentials from a token endpoint answer (RFC 6749 section 5.1)."""
    access_token = body.get("access_token")
    if not isinstance(access_token, str) or not access_token:
        raise OidcError("the identity provider answered without an access token")
    expires_in = body.get("expires_in")
    if isinstance(expires_in, int | float):
        expires_at = now + float(expires_in)
    else:
        try:
            expires_at = float(jwt_claims(access_token)["exp"])
        except (ValueError, KeyError, TypeError):
            expires_at = now + 60.0
    refresh_in = body.get("refresh_expires_in")
    refresh_expires_at = (
        now + float(refresh_in) if isinstance(refresh_in, int | float) and refresh_in > 0 else None
    )
    # A refresh answer may omit the refresh token, meaning "keep using the old one".
    refresh_token = body.get("refresh_token") or (previous.refresh_token if previous else "")
    if not body.get("refresh_token") and previous is not None:
        refresh_expires_at = previous.refresh_expires_at
    if not username:
        try:
            username = str(jwt_claims(access_token).get("preferred_username") or "")
        except ValueError:
            username = ""
    return Credentials(
        access_token=access_token,
        refresh_token=str(refresh_token),
        expires_at=expires_at,
        issuer=issuer,
        username=username,
        refresh_expires_at=refresh_expires_at,
    )


def default_config_dir() -> Path:
    override = os.environ.get(CONFIG_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_config_dir("toex"))


class CredentialStore:
    """One JSON file, written atomically and readable by its owner only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> CredentialStore:
        return cls(default_config_dir() / "credentials.json")

    def load(self) -> Credentials | None:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LoginRequired(f"cannot read {self.path}: {exc.strerror}; {LOGIN_HINT}") from None
        try:
            return Credentials.from_json(json.loads(text))
        except (ValueError, KeyError, TypeError):
            raise LoginRequired(f"{self.path} is damaged; {LOGIN_HINT} to replace it") from None

    def save(self, credentials: Credentials) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=".credentials-", suffix=".json", dir=self.path.parent)
        try:
            os.fchmod(fd, 0o600)  # mkstemp already creates 0600; be explicit about the intent
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(credentials.to_json(), handle, indent=2)
                handle.write("\n")
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def delete(self) -> bool:
        try:
            self.path.unlink()
        except FileNotFoundError:
            return False
        return True


class OidcClient:
    """The two token endpoint grants the CLI uses, plus logout (ends the Keycloak session)."""

    def __init__(
        self, issuer: str, *, transport: httpx.BaseTransport | None = None, timeout: float = 10.0
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self._transport = transport
        self._timeout = timeout

    @property
    def token_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/token"

    @property
    def logout_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/logout"

    def password_grant(self, username: str, password: str, *, now: float | None = None) -> Credentials:
        body = self._post(
            self.token_endpoint,
            {"grant_type": "password", "client_id": CLIENT_ID, "username": username, "password": password},
        )
        return credentials_from_response(
            body, issuer=self.issuer, username=username, now=time.time() if now is None else now
        )

    @property
    def device_endpoint(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/auth/device"

    def device_authorization(self) -> DeviceAuthorization:
        """Start the device authorization grant (RFC 8628): a code for the person to enter at
        an address in any browser, where they log in with the realm's own protections."""
        body = self._post(self.device_endpoint, {"client_id": CLIENT_ID})
        try:
            return DeviceAuthorization(
                device_code=str(body["device_code"]),
                user_code=str(body["user_code"]),
                verification_uri=str(body["verification_uri"]),
                verification_uri_complete=str(
                    body.get("verification_uri_complete") or body["verification_uri"]
                ),
                expires_in=float(body.get("expires_in", 600)),
                interval=float(body.get("interval", 5)),
            )
        except (KeyError, TypeError, ValueError):
            raise OidcError("the identity provider's device authorization answer is incomplete") from None

    def device_token(
        self,
        started: DeviceAuthorization,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> Credentials:
        """Poll until the person has approved (or refused, or the code expired)."""
        deadline = clock() + started.expires_in
        interval = started.interval
        while True:
            try:
                body = self._post(
                    self.token_endpoint,
                    {
                        "grant_type": "urn:ietf:params:oauth:grant-type:device_code",
                        "client_id": CLIENT_ID,
                        "device_code": started.device_code,
                    },
                )
            except OidcError as exc:
                if exc.error == "authorization_pending" and clock() < deadline:
                    sleep(interval)
                    continue
                if exc.error == "slow_down" and clock() < deadline:
                    interval += 5
                    sleep(interval)
                    continue
                raise
            return credentials_from_response(body, issuer=self.issuer, username="", now=clock())

    def refresh(self, previous: Credentials, *, now: float | None = None) -> Credentials:
        body = self._post(
            self.token_endpoint,
            {"grant_type": "refresh_token", "client_id": CLIENT_ID, "refresh_token": previous.refresh_token},
        )
        return credentials_from_response(
            body,
            issuer=self.issuer,
            username=previous.username,
            now=time.time() if now is None else now,
            previous=previous,
        )

    def logout(self, refresh_token: str) -> None:
        self._post(self.logout_endpoint, {"client_id": CLIENT_ID, "refresh_token": refresh_token})

    def _post(self, url: str, form: Mapping[str, str]) -> dict[str, Any]:
        try:
            with httpx.Client(transport=self._transport, timeout=self._timeout) as client:
                response = client.post(url, data=dict(form), headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise OidcError(
                f"cannot reach the identity provider at {self.issuer} ({exc})", unreachable=True
            ) from None
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {}
        if not isinstance(body, dict):
            body = {}
        if response.is_success:
            return body
        error = str(body.get("error") or "")
        description = str(body.get("error_description") or error or response.reason_phrase)
        if response.status_code == 404:
            description = f"no realm at {self.issuer} (HTTP 404); check --issuer or ${ISSUER_ENV}"
        raise OidcError(description, error)


class TokenSource:
    """Gives each call a usable access token, refreshing the stored one when it is about to expire."""

    def __init__(
        self,
        store: CredentialStore,
        *,
        env_token: str | None = None,
        clock: Callable[[], float] = time.time,
        oidc: Callable[[str], OidcClient] = OidcClient,
    ) -> None:
        self.store = store
        self.env_token = env_token or None
        self._clock = clock
        self._oidc = oidc
        self._cached: Credentials | None = None

    def access_token(self) -> str:
        if self.env_token:
            return self.env_token
        now = self._clock()
        credentials = self._cached or self.store.load()
        if credentials is None:
            raise LoginRequired(f"you are not logged in; {LOGIN_HINT} (scripts may set ${TOKEN_ENV})")
        if credentials.expires_within(REFRESH_MARGIN_SECONDS, now):
            credentials = self._refresh(credentials, now)
        self._cached = credentials
        return credentials.access_token

    def _refresh(self, credentials: Credentials, now: float) -> Credentials:
        if not credentials.refresh_token:
            raise LoginRequired(f"your token has expired; {LOGIN_HINT}")
        if credentials.refresh_expires_at is not None and now >= credentials.refresh_expires_at:
            raise LoginRequired(f"your session has expired; {LOGIN_HINT}")
        try:
            fresh = self._oidc(credentials.issuer).refresh(credentials, now=now)
        except OidcError as exc:
            raise LoginRequired(f"could not refresh your session ({exc}); {LOGIN_HINT}") from None
        self.store.save(fresh)
        return fresh

    def username(self) -> str:
        """Who the CLI acts as, for display and default names; empty when unknown."""
        token = self.env_token
        if token is None:
            try:
                stored = self.store.load()
            except LoginRequired:
                stored = None
            if stored is None:
                return ""
            if stored.username:
                return stored.username
            token = stored.access_token
        try:
            return str(jwt_claims(token).get("preferred_username") or "")
        except ValueError:
            return ""
