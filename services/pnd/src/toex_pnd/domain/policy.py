"""Who may do what: the PND sync service's one policy module.

- researcher: records, changes and reads intelligence of their own region; searches the PND.
- analyst: reads intelligence of their own region; searches the PND.
- supervisor: as a researcher, and releases held (handling code C) records of their region;
  runs reconciliation.
- national_coordinator: all of it in every region.
- service accounts: record and read intelligence (other services' events): the hub's of every
  region, a region installation's of its own.
A record outside the caller's scope is reported as not found, like one that does not exist.
"""

from __future__ import annotations

from toex_kernel.errors import NotFound, OutOfScope, PermissionDenied
from toex_kernel.policy import MethodRule, rules_for
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_pnd.domain.model import IntelligenceRecord

SERVICE = "toex.pnd.v1.PndSyncService"
RES, ANA, SUP, NC, SVC = (
    Role.RESEARCHER,
    Role.ANALYST,
    Role.SUPERVISOR,
    Role.NATIONAL_COORDINATOR,
    Role.SERVICE,
)

METHOD_RULES = rules_for(
    SERVICE,
    {
        "SubmitIntelligence": MethodRule.write(RES, SUP, NC, SVC),
        "UpdateIntelligence": MethodRule.write(RES, SUP, NC, SVC),
        "DeleteIntelligence": MethodRule.write(RES, SUP, NC, SVC),
        "GetIntelligence": MethodRule.read(RES, ANA, SUP, NC, SVC),
        "ListIntelligence": MethodRule.read(RES, ANA, SUP, NC, SVC),
        "ReleaseIntelligence": MethodRule.write(SUP, NC),
        "ListSubmissions": MethodRule.read(RES, ANA, SUP, NC, SVC),
        "GetSyncStatus": MethodRule.read(RES, SUP, NC, SVC, purpose_required=False),
        "SearchPnd": MethodRule.read(RES, ANA, SUP, NC),
        "RunReconciliation": MethodRule.write(SUP, NC, SVC),
        "GetReconciliation": MethodRule.read(RES, SUP, NC, SVC, purpose_required=False),
        "ListReconciliationItems": MethodRule.read(RES, SUP, NC, SVC, purpose_required=False),
    },
)


def everywhere(principal: Principal) -> bool:
    # A region installation's service identity sees its own region only.
    return principal.has(NC) or principal.national


def sees(principal: Principal, region: Region) -> bool:
    return everywhere(principal) or principal.region is region


def visible_regions(principal: Principal, requested: Region | None) -> frozenset[Region] | None:
    """Regions to read from: None means every region."""
    if everywhere(principal):
        return frozenset({requested}) if requested else None
    if requested is not None and requested is not principal.region:
        raise PermissionDenied(f"you may read {principal.region.value} only")
    return frozenset({principal.region})


def ensure_visible(principal: Principal, record: IntelligenceRecord | None, name: str) -> IntelligenceRecord:
    if record is None:
        raise NotFound(f"record {name} not found")
    if not sees(principal, record.region):
        raise OutOfScope(f"record {name} not found")
    return record


def ensure_can_write(principal: Principal, region: Region) -> None:
    if not sees(principal, region):
        raise PermissionDenied(f"you may record intelligence for {principal.region.value} only")


def ensure_can_release(principal: Principal, record: IntelligenceRecord) -> None:
    if principal.has(NC) or (principal.has(SUP) and principal.region is record.region):
        return
    raise PermissionDenied("only a supervisor of the owning region or a national coordinator may release")


def ensure_can_search(principal: Principal, region: Region) -> None:
    if not sees(principal, region):
        raise PermissionDenied(f"you may search for {principal.region.value} only")
