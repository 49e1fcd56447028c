"""Sign-in through Keycloak: OpenID Connect authorisation code with PKCE (authlib does the
protocol), as the confidential client `toex-console`."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx
from authlib.common.security import generate_token
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet


class SignInFailed(Exception):
    """The identity provider refused or the answer did not check out; the person signs in again."""


@dataclass
class Authorisation:
    url: str
    state: str
    verifier: str
    nonce: str


class OidcClient:
    def __init__(
        self,
        *,
        issuer: str,
        public_issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        timeout: float = 10.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.public_issuer = (public_issuer or issuer).rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._timeout = timeout
        self._metadata: dict[str, Any] = {}
        self._keys: KeySet | None = None

    def _client(self) -> AsyncOAuth2Client:
        return AsyncOAuth2Client(
            client_id=self._client_id,
            client_secret=self._client_secret,
            scope="openid profile",
            redirect_uri=self._redirect_uri,
            code_challenge_method="S256",
            timeout=self._timeout,
        )

    async def metadata(self) -> dict[str, Any]:
        if not self._metadata:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                answer = await http.get(f"{self.issuer}/.well-known/openid-configuration")
                answer.raise_for_status()
                self._metadata = answer.json()
        return self._metadata

    def _public(self, url: str) -> str:
        """An endpoint as the browser reaches it."""
        return self.public_issuer + url[len(self.issuer) :] if url.startswith(self.issuer) else url

    async def authorise(self) -> Authorisation:
        meta = await self.metadata()
        verifier = generate_token(64)
        nonce = generate_token(32)
        async with self._client() as client:
            url, state = client.create_authorization_url(
                self._public(meta["authorization_endpoint"]), code_verifier=verifier, nonce=nonce
            )
        return Authorisation(url=url, state=state, verifier=verifier, nonce=nonce)

    async def exchange(self, code: str, verifier: str, nonce: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """Tokens for the code, and the ID token's checked claims."""
        meta = await self.metadata()
        async with self._client() as client:
            try:
                token = await client.fetch_token(
                    meta["token_endpoint"], code=code, code_verifier=verifier, grant_type="authorization_code"
                )
            except Exception as exc:
                raise SignInFailed(f"the identity provider refused the sign-in: {exc}") from exc
        claims = await self._check_id_token(str(token.get("id_token", "")), nonce)
        return _stamped(dict(token)), claims

    async def refresh(self, tokens: dict[str, Any]) -> dict[str, Any]:
        meta = await self.metadata()
        async with self._client() as client:
            try:
                token = await client.refresh_token(
                    meta["token_endpoint"], refresh_token=tokens.get("refresh_token")
                )
            except Exception as exc:
                raise SignInFailed(f"the session could not be renewed: {exc}") from exc
        return _stamped(dict(token))

    async def end_session(self, tokens: dict[str, Any]) -> None:
        """End the Keycloak session from the server (its end-session endpoint, with the refresh
        token and the client's credentials), so it is gone even if the browser never follows
        the end-session redirect."""
        meta = await self.metadata()
        endpoint = meta.get("end_session_endpoint")
        refresh = tokens.get("refresh_token")
        if not endpoint or not refresh:
            return
        async with httpx.AsyncClient(timeout=self._timeout) as http:
            await http.post(
                str(endpoint),
                data={
                    "client_id": self._client_id,
                    "client_secret": self._client_secret,
                    "refresh_token": refresh,
                },
            )

    async def _check_id_token(self, id_token: str, nonce: str) -> dict[str, Any]:
        if not id_token:
            raise SignInFailed("the identity provider sent no ID token")
        meta = await self.metadata()
        if self._keys is None:
            async with httpx.AsyncClient(timeout=self._timeout) as http:
                answer = await http.get(meta["jwks_uri"])
                answer.raise_for_status()
                self._keys = KeySet.import_key_set(answer.json())
        try:
            decoded = jwt.decode(id_token, self._keys, algorithms=["RS256", "PS256", "ES256"])
        except Exception as exc:
            raise SignInFailed("the ID token's signature did not check out") from exc
        claims = dict(decoded.claims)
        audience = claims.get("aud")
        audiences = audience if isinstance(audience, list) else [audience]
        if claims.get("iss") != meta.get("issuer") or self._client_id not in audiences:
            raise SignInFailed("the ID token was not issued for the console")
        if claims.get("nonce") != nonce:
            raise SignInFailed("the ID token does not belong to this sign-in")
        if float(claims.get("exp", 0)) < time.time():
            raise SignInFailed("the ID token has expired")
        return claims


def _stamped(token: dict[str, Any]) -> dict[str, Any]:
    if "expires_at" not in token and "expires_in" in token:
        token["expires_at"] = time.time() + float(token["expires_in"])
    return token
