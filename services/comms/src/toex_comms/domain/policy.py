"""Who may do what with comms data: the comms service's one policy module.

- national_coordinator: everything, in every region.
- analyst, researcher, supervisor: import, analyse and manage watchlists of their own region.
- service accounts: read (other services follow up on what this one publishes): the hub's
  every region, a region installation's its own.
Reads state a purpose. Anything of another region answers NOT_FOUND, exactly like something
that does not exist; the audit log records the refusal.

Work under a job grant (toex_kernel.grants). An analyst, researcher or supervisor assigned a job
J of another region R, while J is open, reaches the comms material attached to J, and only
when the call's purpose names J (`regions/R/jobs/ID` or `R/ID`):

- may: import CDR, ANPR and advert files into R with job J (stored as R's, attached to J); read,
  list and page J's datasets and their rejections; search and page the phone index of J's CDR
  datasets; run every analysis and export over J's datasets (each dataset named must be J's;
  naming none means every dataset of J); list the watchlist contacts found in J's datasets and
  the advert flags of J's datasets; list R's mapping profiles and import with them (column
  mappings, no intelligence).
- findings of R's watchlists about J's data: an import under J is checked against R's
  watchlists like any import, and answers about J's data say which of R's lists hold a number
  found there (watchlist contacts, watchlist labels of analyses, a phone-index search whose
  number is in J's data, advert flags). Nothing more of a watchlist: a holder never lists,
  reads, creates or changes R's watchlists.
- never: anything of R not attached to J (other datasets, contacts, flags, a flag's evidence
  from R's other call data); R's attributions (whom a number or vehicle belongs to is the
  region's knowledge: the holder asks the entity service under the same job); attributing an
  identifier, creating mapping profiles, creating watchlists or adding numbers to them.
A supervisor of a region collaborating on J (named on the job) reads what a holder reads and
changes nothing. A refusal is the refusal of another region's material: NOT_FOUND, audited as
denied. Method
rules are unchanged: a grant gives no role. Callers who see R today are decided as before and
never pay for a grant lookup.
"""

from __future__ import annotations

from dataclasses import dataclass

from toex_kernel.errors import OutOfScope
from toex_kernel.grants import JobGrant, covered, covered_for_reading
from toex_kernel.installation import Served, served_for
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
# Who may work a region's material under a job grant: those who work their own region's.
GRANTEES = (SUP, AN, RES)

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
    "FindAdvertNetworks",
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

# Where each request names the region of the material it reaches: an installation stores and
# analyses only its own region's comms data (toex_kernel.installation); `regions/-` reads its own.
_ANALYSIS = Served.by("scope.parent", "scope.datasets")
SERVED = served_for(
    SERVICE,
    {
        "ImportCdr": Served.by("header.parent"),
        "ImportAnpr": Served.by("header.parent"),
        "ImportAdverts": Served.by("header.parent"),
        "GetDataset": Served.by("name"),
        "ListDatasets": Served.listing_of("parent"),
        "ListRejections": Served.by("parent"),
        "CreateMappingProfile": Served.by("parent"),
        "ListMappingProfiles": Served.by("parent"),
        "SearchPhoneIndex": Served.listing_of("parent"),
        "ListPhoneIndex": Served.by("parent", "datasets"),
        "AttributeIdentifier": Served.by("parent"),
        "GetContactNetwork": _ANALYSIS,
        "FindCommonContacts": _ANALYSIS,
        "RankSuspects": _ANALYSIS,
        "GetTargetProfile": _ANALYSIS,
        "FindColocations": _ANALYSIS,
        "CreateWatchlist": Served.by("parent"),
        "AddWatchlistNumbers": Served.by("name"),
        "ListWatchlists": Served.by("parent"),
        "ListWatchlistContacts": Served.by("parent"),
        "ListAdvertFlags": Served.by("parent", "dataset"),
        "FindAdvertNetworks": Served.by("scope.parent", "scope.datasets", "call_datasets"),
        "FindConvoys": _ANALYSIS,
        "GetTravelPattern": _ANALYSIS,
        "Export": _ANALYSIS,
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


# ---------------------------------------------------------------- job grants


@dataclass(frozen=True)
class Reach:
    """How much of a region's material one call reaches: all of it (the caller sees the region
    without a grant), or only what is attached to the job whose grant the caller works under."""

    region: Region
    # The job under whose grant the call works; "" for the whole region.
    job: str = ""

    @property
    def under_grant(self) -> bool:
        return bool(self.job)

    def admits(self, material_job: str) -> bool:
        """Whether material of the region attached to `material_job` ("" for none) is reached."""
        return not self.job or material_job == self.job

    def ensure_admits(self, material_job: str, what: str) -> None:
        if not self.admits(material_job):
            raise OutOfScope(f"{what} not found")


def needs_grant(principal: Principal, region: Region, *, change: bool = False) -> bool:
    """Whether the call reaches `region` only through a job grant: only then is one looked up."""
    return not (can_change if change else can_see)(principal, region)


def reach(
    principal: Principal, region: Region, grant: JobGrant | None, what: str, *, change: bool = False
) -> Reach:
    """The whole region for whoever sees (or, to `change`, may change) it without a grant; the
    grant's job for a holder of the open job of that region the call's purpose names (`grant`);
    otherwise OutOfScope, as for any other region's material."""
    if not needs_grant(principal, region, change=change):
        return Reach(region)
    if grant is not None and principal.has(*GRANTEES):
        # Holders work the job's material; a collaborating region's supervisor reads it.
        allowed = covered if change else covered_for_reading
        if allowed(grant, principal, region, grant.job):
            return Reach(region, grant.job)
    raise OutOfScope(f"{what} not found")
