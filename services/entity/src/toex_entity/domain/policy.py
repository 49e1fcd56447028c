"""Who may do what with records and entities: the entity service's one policy module.

- Records belong to one region. A caller sees the records of their own region; the national
  team and the hub's service identity see every region; a region installation's service
  identity sees that region only.
- An entity is visible when at least one of its records is; the caller sees only those
  records. Deconfliction rule: a caller who sees an entity is told which other regions hold
  records on it and whom to contact there, never what those records say.
- Records are submitted by researchers, analysts, supervisors, the national team and
  service accounts, into their own region (the national team and the hub's services: any
  region).
- Review, merge and split change what everybody sees, so they need a caller who may see
  every record involved: a reviewer of the region for a pair within it, the national team
  for pairs and entities that span regions.
"""

from __future__ import annotations

from collections.abc import Iterable

from toex_kernel.errors import PermissionDenied
from toex_kernel.policy import MethodRule, rules_for, sees_region
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

SERVICE = "toex.entity.v1.EntityResolutionService"

RES, ANA, SUP, NC = Role.RESEARCHER, Role.ANALYST, Role.SUPERVISOR, Role.NATIONAL_COORDINATOR
SAFE, SVC = Role.SAFEGUARDING_OFFICER, Role.SERVICE

METHOD_RULES = rules_for(
    SERVICE,
    {
        "ResolveRecord": MethodRule.write(RES, ANA, SUP, NC, SVC, purpose_required=True),
        "IngestRecords": MethodRule.write(RES, ANA, SUP, NC, SVC),
        "GetEntity": MethodRule.read(RES, ANA, SUP, NC, SAFE, SVC),
        "SearchEntities": MethodRule.read(RES, ANA, SUP, NC, SAFE, SVC),
        "ExplainMatch": MethodRule.read(RES, ANA, SUP, NC, SVC),
        "ListReviewTasks": MethodRule.read(RES, ANA, SUP, NC),
        "DecideReview": MethodRule.write(RES, ANA, SUP, NC, purpose_required=True),
        "MergeEntities": MethodRule.write(ANA, SUP, NC, purpose_required=True),
        "SplitEntity": MethodRule.write(ANA, SUP, NC, purpose_required=True),
    },
)


def sees_all(principal: Principal) -> bool:
    # The national team and the hub's service identity (region NATIONAL); a region
    # installation's service identity sees its own region, as its people do.
    return principal.national


def sees(principal: Principal, region: Region) -> bool:
    return sees_all(principal) or sees_region(principal, region)


def ensure_can_submit(principal: Principal, region: Region) -> None:
    if sees_all(principal) or principal.region is region:
        return
    raise PermissionDenied(f"you may submit records to {principal.region.value} only")


def ensure_sees_every(principal: Principal, regions: Iterable[Region], what: str) -> None:
    hidden = sorted({r.value for r in regions if not sees(principal, r)})
    if hidden:
        raise PermissionDenied(
            f"{what} involves records of {', '.join(hidden)}, which you may not see; "
            "ask a national coordinator"
        )


def review_regions(principal: Principal, requested: Region | None) -> frozenset[Region] | None:
    """Regions whose review tasks the caller may list (None: all)."""
    if sees_all(principal):
        return frozenset({requested}) if requested else None
    if requested is not None and requested is not principal.region:
        raise PermissionDenied(f"you may list review tasks of {principal.region.value} only")
    return frozenset({principal.region})


def contact_role(region: Region) -> str:
    """Whom another region should contact about a deconfliction."""
    if region is Region.NATIONAL:
        return "National coordination team: duty national coordinator"
    return f"{region.value} ROCU: intelligence supervisor (deconfliction)"
