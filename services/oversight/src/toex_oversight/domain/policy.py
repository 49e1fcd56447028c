"""Who may read the national overview: the oversight service's one policy module.

- national_coordinator: every region's figures;
- supervisor or analyst of the national team (region NATIONAL): every region's figures;
- supervisor of a region: that region's figures only (asking for another region is refused);
- everyone else (researchers, regional analysts, safeguarding officers, auditors, admins,
  service accounts): refused.
The figures hold no personal data, but they are the state of the country's intelligence work:
a read states its purpose and is audited like any other.
"""

from __future__ import annotations

from toex_kernel.errors import PermissionDenied
from toex_kernel.installation import Served, served_for
from toex_kernel.policy import MethodRule, rules_for
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_oversight.domain.overview import ordered

SERVICE = "toex.oversight.v1.OversightService"

NC, SUP, ANALYST = Role.NATIONAL_COORDINATOR, Role.SUPERVISOR, Role.ANALYST

METHOD_RULES = rules_for(SERVICE, {"GetOverview": MethodRule.read(NC, SUP, ANALYST)})

# The request names regions as a filter of figures the hub holds for every region, not
# resources of one installation: nothing in it is served by a region installation.
SERVED = served_for(
    SERVICE,
    {"GetOverview": Served.nowhere("figures of every region, held by the hub's oversight read model")},
)


def sees_every_region(principal: Principal) -> bool:
    return principal.has(NC) or (principal.national and principal.has(SUP, ANALYST))


def overview_regions(principal: Principal, requested: frozenset[Region]) -> tuple[Region, ...]:
    """The regions `principal` is answered for when asking for `requested` (empty: all they
    may see), in the API's order."""
    if sees_every_region(principal):
        return ordered(requested or frozenset(Region))
    own = principal.region
    if principal.has(SUP) and not principal.national:
        others = sorted(r.value for r in requested - {own})
        if others:
            raise PermissionDenied(
                f"a supervisor of {own.value} sees the overview of {own.value} only "
                f"(asked for {', '.join(others)})"
            )
        return (own,)
    raise PermissionDenied(
        "the national overview is for national coordinators, the national team's supervisors and "
        "analysts, and regions' supervisors (their own region)"
    )
