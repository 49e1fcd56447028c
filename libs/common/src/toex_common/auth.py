"""Offline verification of Keycloak-issued access tokens against the realm's JWKS.

Keys are fetched once and cached; a token signed with an unknown key id triggers one refresh
(at most every `min_refresh_seconds`, so junk tokens cannot make us hammer the identity
provider). The key set is also fetched again on a schedule (`refresh_keys`, run by every
service every `jwks_refresh_seconds`), so a key the realm retired stops verifying within that
time: its keys are dropped, and so is every remembered token it signed. Issuer, audience,
expiry and the algorithm allow-list are all checked. Verified tokens are remembered until they
expire or their key goes, so a client reusing its token pays the signature check once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import jwt
from toex_kernel.errors import Unauthenticated, Unavailable
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

log = logging.getLogger(__name__)

_KNOWN_ROLES = {role.value: role for role in Role}


class JwksCache:
    def __init__(self, issuer: str, *, min_refresh_seconds: float = 10.0, http_timeout: float = 5.0) -> None:
        self.issuer = issuer.rstrip("/")
        self._keys: dict[str, jwt.PyJWK] = {}
        self._last_refresh = float("-inf")
        self._min_refresh = min_refresh_seconds
        self._timeout = http_timeout
        self._lock = asyncio.Lock()

    async def key(self, kid: str) -> jwt.PyJWK:
        if kid in self._keys:
            return self._keys[kid]
        async with self._lock:
            if kid not in self._keys and time.monotonic() - self._last_refresh >= self._min_refresh:
                await self._refresh()
        if kid not in self._keys:
            raise Unauthenticated("token signed with an unknown key")
        return self._keys[kid]

    def has(self, kid: str) -> bool:
        """Whether `kid` is in the key set as last fetched."""
        return kid in self._keys

    async def refresh(self) -> None:
        """Fetch the key set now (the scheduled refresh); keys no longer published are dropped."""
        async with self._lock:
            await self._refresh()

    async def _refresh(self) -> None:
        self._last_refresh = time.monotonic()
        try:
            async with httpx.AsyncClient(timeout=self._timeout) as client:
                discovery = await client.get(f"{self.issuer}/.well-known/openid-configuration")
                discovery.raise_for_status()
                response = await client.get(discovery.json()["jwks_uri"])
                response.raise_for_status()
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            log.warning("could not fetch JWKS from %s: %s", self.issuer, exc)
            raise Unavailable("identity provider keys are unavailable; try again shortly") from exc
        keys: dict[str, jwt.PyJWK] = {}
        for data in response.json().get("keys", []):
            if data.get("use", "sig") != "sig" or "kid" not in data:
                continue
            try:
                keys[data["kid"]] = jwt.PyJWK(data)
            except jwt.PyJWTError:
                continue  # an algorithm we do not support; it cannot verify our tokens anyway
        self._keys = keys
        log.info("loaded %d signing keys from %s", len(keys), self.issuer)


class TokenVerifier:
    def __init__(
        self,
        issuer: str,
        audience: str,
        algorithms: Iterable[str] = ("RS256",),
        *,
        jwks: JwksCache | None = None,
        cache_size: int = 4096,
        leeway_seconds: float = 5.0,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.audience = audience
        self.algorithms = list(algorithms)
        self.jwks = jwks or JwksCache(self.issuer)
        # token -> (expiry, caller, id of the key that signed it)
        self._verified: OrderedDict[str, tuple[float, Principal, str]] = OrderedDict()
        self._cache_size = cache_size
        self._leeway = leeway_seconds

    def remembered(self, token: str) -> Principal | None:
        """The caller of a token verified before and not yet expired, else None."""
        cached = self._verified.get(token)
        if cached is None:
            return None
        expires, principal, kid = cached
        if time.time() < expires and self.jwks.has(kid):
            self._verified.move_to_end(token)
            return principal
        del self._verified[token]
        return None

    async def refresh_keys(self) -> None:
        """The scheduled refresh: fetch the key set and forget tokens whose key has gone."""
        await self.jwks.refresh()
        for token in [t for t, (_, _, kid) in self._verified.items() if not self.jwks.has(kid)]:
            del self._verified[token]

    async def verify(self, token: str) -> Principal:
        principal = self.remembered(token)
        if principal is not None:
            return principal
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthenticated("malformed bearer token") from exc
        if header.get("alg") not in self.algorithms:
            raise Unauthenticated(f"token algorithm {header.get('alg')!r} is not allowed")
        kid = str(header.get("kid", ""))
        key = await self.jwks.key(kid)
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=self.algorithms,
                audience=self.audience,
                issuer=self.issuer,
                leeway=self._leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthenticated("token has expired; log in again") from exc
        except jwt.PyJWTError as exc:
            raise Unauthenticated(f"token rejected: {exc}") from exc
        principal = principal_from_claims(claims)
        self._verified[token] = (float(claims["exp"]), principal, kid)
        if len(self._verified) > self._cache_size:
            self._verified.popitem(last=False)
        return principal


def principal_from_claims(claims: Mapping[str, Any]) -> Principal:
    region_claim = claims.get("region")
    if isinstance(region_claim, list):  # multivalued attribute mappers produce lists
        region_claim = region_claim[0] if len(region_claim) == 1 else None
    if not isinstance(region_claim, str):
        raise Unauthenticated("token carries no region; ask an administrator to set the user's region")
    try:
        region = Region.parse(region_claim)
    except ValueError as exc:
        raise Unauthenticated(f"token carries an unknown region {region_claim!r}") from exc
    raw_roles = (claims.get("realm_access") or {}).get("roles") or []
    roles = frozenset(_KNOWN_ROLES[r] for r in raw_roles if r in _KNOWN_ROLES)
    username = claims.get("preferred_username") or claims.get("azp") or claims["sub"]
    return Principal(subject=str(claims["sub"]), username=str(username), region=region, roles=roles)
