"""Who is calling: built from a verified token by the authentication interceptor."""

from __future__ import annotations

import enum
import functools
from dataclasses import dataclass

from toex_kernel.regions import Region


class Role(enum.StrEnum):
    RESEARCHER = "researcher"
    ANALYST = "analyst"
    SUPERVISOR = "supervisor"
    NATIONAL_COORDINATOR = "national_coordinator"
    SAFEGUARDING_OFFICER = "safeguarding_officer"
    AUDITOR = "auditor"
    ADMIN = "admin"
    # Held by service accounts for service-to-service calls.
    SERVICE = "service"


@dataclass(frozen=True)
class Principal:
    subject: str
    username: str
    region: Region
    roles: frozenset[Role]

    def has(self, *roles: Role) -> bool:
        return any(role in self.roles for role in roles)

    @functools.cached_property
    def role_names(self) -> tuple[str, ...]:
        """The roles' names, sorted (as the audit log records them)."""
        return tuple(sorted(r.value for r in self.roles))

    @property
    def national(self) -> bool:
        return self.region is Region.NATIONAL
