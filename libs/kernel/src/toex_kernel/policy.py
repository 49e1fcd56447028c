"""Method-level access rules: which roles may call a method at all, and whether a purpose
must be stated. Per-resource region scope is decided by each service's own policy module
with the helpers here, because it depends on the resource."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from toex_kernel.errors import FailedPrecondition, PermissionDenied
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

PURPOSE_METADATA_KEY = "x-toex-purpose"
MAX_PURPOSE_LENGTH = 200

# Methods anyone may call without a token: Kubernetes probes and grpcurl discovery.
PUBLIC_METHOD_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class Access(enum.Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class MethodRule:
    roles: frozenset[Role]
    access: Access
    # Reads of intelligence or personal data must say why (DPA 2018 s62).
    purpose_required: bool = True

    @classmethod
    def read(cls, *roles: Role, purpose_required: bool = True) -> MethodRule:
        return cls(frozenset(roles), Access.READ, purpose_required)

    @classmethod
    def write(cls, *roles: Role, purpose_required: bool = False) -> MethodRule:
        """A change; `purpose_required` for a change whose answer carries personal data (a
        resolved record, a merged entity, a referral), which is a read as much as a write."""
        return cls(frozenset(roles), Access.WRITE, purpose_required)


# Methods whose request carries its own credential, for callers who hold no toex account: called
# without a bearer token they skip authentication and the method's role rule (the servicer checks
# the request's one-time token), and are audited as any call. Called with a bearer token, they
# are authenticated and authorised as usual. Each entry is a deliberate, reviewed exception.
TOKEN_CREDENTIAL_METHODS = frozenset(
    {
        # The requesting officer's feedback, with the one-time token of FeedbackRequested.
        "/toex.tasking.v1.TaskingService/RecordFeedback",
    }
)


def is_public(method: str) -> bool:
    return method.startswith(PUBLIC_METHOD_PREFIXES)


def is_token_credentialed(method: str) -> bool:
    return method in TOKEN_CREDENTIAL_METHODS


class MethodPolicy:
    """Deny by default: a method without a rule cannot be called."""

    def __init__(self, rules: Mapping[str, MethodRule]) -> None:
        self._rules = dict(rules)

    def rule(self, method: str) -> MethodRule | None:
        return self._rules.get(method)

    def check(self, principal: Principal, method: str, purpose: str) -> MethodRule:
        rule = self._rules.get(method)
        if rule is None:
            raise PermissionDenied(f"{method} is not open to any role")
        if not principal.roles & rule.roles:
            allowed = ", ".join(sorted(r.value for r in rule.roles))
            raise PermissionDenied(f"{method.rsplit('/', 1)[-1]} needs one of the roles: {allowed}")
        if rule.purpose_required and not purpose:
            raise FailedPrecondition(
                "state the purpose of this call in the x-toex-purpose metadata "
                "(an operation name or job reference): its answer carries intelligence",
                type="PURPOSE",
                subject=PURPOSE_METADATA_KEY,
                description="reads of intelligence must carry a purpose",
            )
        return rule


def normalise_purpose(raw: str | None) -> str:
    return " ".join((raw or "").split())[:MAX_PURPOSE_LENGTH]


def service_sees_all(principal: Principal) -> bool:
    """A service identity sees every region only when it is the hub's (region NATIONAL); a
    region installation's service identity sees that region alone, so one leaked regional
    client secret reads one region, not all."""
    return principal.national and principal.has(Role.SERVICE)


def sees_region(principal: Principal, region: Region) -> bool:
    """National users see every region; everyone else sees their own."""
    return principal.national or principal.region is region


def rules_for(service: str, table: Mapping[str, MethodRule]) -> dict[str, MethodRule]:
    """Expand short method names to the full `/package.Service/Method` form."""
    return {f"/{service}/{name}": rule for name, rule in table.items()}


def roles(*names: Role) -> frozenset[Role]:
    return frozenset(names)


def all_roles_except(excluded: Iterable[Role]) -> frozenset[Role]:
    return frozenset(Role) - frozenset(excluded)
