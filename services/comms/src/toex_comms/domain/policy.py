"""Who may do what with comms data: the comms service's one policy module.

- national_coordinator: everything, in every region.
- analyst, researcher, supervisor: import, analyse and manage watchlists of their own region.
- service accounts: read (other services follow up on what this one publishes): the hub's
  every region, a region installation's its own.
Reads state a purpose. Anything of another region answers NOT_FOUND, exactly like something
that does not exist; the audit log records the refusal.
"""

from __future__ import annotations

from toex_kernel.errors import OutOfScope
from toex_kernel.policy import MethodRule, rules_for, service_sees_all
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

SERVICE = "toex.comms.v1.CommsAnalysisService"

NC, SUP, AN, RES, SVC = (
    Role.NATIONAL_COORDINATOR,
    Role.SUPERVISOR,
    Role.ANALYST,
    Role.RESEARCHER,
    Role.SERVICE,
)
WORKERS = (NC, SUP, AN, RES)
READERS = (*WORKERS, SVC)

_READS = (
    "GetDataset",
    "ListDatasets",
    "ListRejections",
    "SearchPhoneIndex",
    "ListPhoneIndex",
    "GetContactNetwork",
    "FindCommonContacts",
    "RankSuspects",
    "GetTargetProfile",
    "FindColocations",
    "ListWatchlists",
    "ListWatchlistContacts",
    "ListAdvertFlags",
    "FindConvoys",
    "GetTravelPattern",
    "Export",
)
_WRITES = (
    "ImportCdr",
    "ImportAnpr",
    "ImportAdverts",
    "CreateMappingProfile",
    "AttributeIdentifier",
    "CreateWatchlist",
    "AddWatchlistNumbers",
)

METHOD_RULES = rules_for(
    SERVICE,
    {
        **{m: MethodRule.read(*READERS) for m in _READS},
        "ListMappingProfiles": MethodRule.read(*READERS, purpose_required=False),
        **{m: MethodRule.write(*WORKERS) for m in _WRITES},
    },
)


def can_see(principal: Principal, region: Region) -> bool:
    if principal.has(NC) or service_sees_all(principal):
        return True
    return principal.has(SUP, AN, RES, SVC) and principal.region is region


def can_change(principal: Principal, region: Region) -> bool:
    if principal.has(NC):
        return True
    return principal.has(SUP, AN, RES) and principal.region is region


def ensure_visible(principal: Principal, region: Region, what: str) -> None:
    if not can_see(principal, region):
        raise OutOfScope(f"{what} not found")


def ensure_can_change(principal: Principal, region: Region, what: str) -> None:
    """Writes into another region answer NOT_FOUND too: the caller learns nothing about it."""
    if not can_change(principal, region):
        raise OutOfScope(f"{what} not found")


def visible_regions(principal: Principal, requested: Region | None) -> list[Region] | None:
    """For listing across regions: None means every region."""
    if requested is not None:
        ensure_visible(principal, requested, f"regions/{requested.value}")
        return [requested]
    if principal.has(NC) or service_sees_all(principal):
        return None
    return [principal.region]
