"""Who the researchers are: read from Keycloak's admin API with the service's own account.

Answers are cached briefly: assignment checks and capacity reports ask often, and a user's
region or role changes rarely.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from keycloak import KeycloakAdmin, KeycloakOpenIDConnection
from keycloak.exceptions import KeycloakError
from toex_kernel.errors import Unavailable
from toex_kernel.principal import Role
from toex_kernel.regions import Region

from toex_tasking.service_layer.ports import DirectoryUser

_ROLES = {r.value: r for r in Role}


class KeycloakDirectory:
    def __init__(self, issuer: str, client_id: str, client_secret: str, *, ttl_seconds: float = 60.0) -> None:
        base, _, realm = issuer.rstrip("/").rpartition("/realms/")
        self._admin = KeycloakAdmin(
            connection=KeycloakOpenIDConnection(
                server_url=base + "/",
                realm_name=realm,
                user_realm_name=realm,
                client_id=client_id,
                client_secret_key=client_secret,
                grant_type="client_credentials",
                timeout=10,
            )
        )
        self._ttl = ttl_seconds
        self._users: dict[str, tuple[float, DirectoryUser | None]] = {}
        self._researchers: tuple[float, list[DirectoryUser]] | None = None
        self._lock = asyncio.Lock()

    async def find(self, username: str) -> DirectoryUser | None:
        cached = self._users.get(username)
        if cached and time.monotonic() - cached[0] < self._ttl:
            return cached[1]
        try:
            found = await self._admin.a_get_users({"username": username, "exact": True})
            user = None
            if found:
                roles = await self._admin.a_get_realm_roles_of_user(found[0]["id"])
                user = _user(found[0], [r["name"] for r in roles])
        except KeycloakError as exc:
            raise Unavailable(f"user directory unavailable: {exc}") from exc
        self._users[username] = (time.monotonic(), user)
        return user

    async def researchers(self, region: Region) -> list[DirectoryUser]:
        async with self._lock:
            if self._researchers is None or time.monotonic() - self._researchers[0] >= self._ttl:
                try:
                    members = await self._admin.a_get_realm_role_members(
                        Role.RESEARCHER.value, {"max": 10000}
                    )
                except KeycloakError as exc:
                    raise Unavailable(f"user directory unavailable: {exc}") from exc
                users = [u for m in members if (u := _user(m, [Role.RESEARCHER.value])) is not None]
                self._researchers = (time.monotonic(), users)
        return [u for u in self._researchers[1] if u.region is region]


def _user(data: dict[str, Any], role_names: list[str]) -> DirectoryUser | None:
    values = (data.get("attributes") or {}).get("region") or []
    try:
        region = Region.parse(values[0]) if values else None
    except ValueError:
        region = None
    if region is None or not data.get("enabled", True):
        return None
    return DirectoryUser(
        username=data["username"],
        region=region,
        roles=frozenset(_ROLES[n] for n in role_names if n in _ROLES),
    )


class StaticDirectory:
    """A fixed directory: unit tests, and demos without Keycloak's admin API."""

    def __init__(self, users: list[DirectoryUser]) -> None:
        self._users = {u.username: u for u in users}

    async def find(self, username: str) -> DirectoryUser | None:
        return self._users.get(username)

    async def researchers(self, region: Region) -> list[DirectoryUser]:
        return [u for u in self._users.values() if u.region is region and Role.RESEARCHER in u.roles]
