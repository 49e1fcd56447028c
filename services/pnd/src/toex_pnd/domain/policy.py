"""Who may do what: the PND sync service's one policy module.

- researcher: records, changes and reads intelligence of their own region; searches the PND.
- analyst: reads intelligence of their own region; searches the PND.
- supervisor: as a researcher, and releases held (handling code C) records of their region;
  runs reconciliation.
- national_coordinator: all of it in every region.
- service accounts: record and read intelligence (other services' events): the hub's of every
  region, a region installation's of its own.
A record outside the caller's scope is reported as not found, like one that does not exist.

Work under a job grant (toex_kernel.grants). A job's material here is the intelligence made for
it: a record is attached to job J of region R when it was submitted in R with J as the call's
purpose (by anyone who may submit there), and stays attached. Someone of another region whose
role allows the call, who holds J (one of its assignees, while J is open) and states J as the
call's purpose may, in R:
- submit intelligence (SubmitIntelligence under `regions/R`): stored in R, labelled R,
  attached to J, queued for the PND like R's own (held for release when graded C);
- change J's records (UpdateIntelligence): a new version, a new submission, attached to J still;
- read J's records and their submissions (GetIntelligence, ListSubmissions), and list them
  (ListIntelligence of `regions/R` lists J's records alone; `regions/-` lists their own region);
- search the PND on R's behalf (SearchPnd under `regions/R`): the search is R's, made for J.
They may not delete (withdraw from the PND) any record of R, release a held record (a
supervisor of R or a national coordinator decides what the PND may have), read R's queue or
reconciliations, or reach any record of R not attached to J. Those calls answer exactly as they
answer anyone of another region: not found for a record, refused for a region.
A supervisor of a region collaborating on J (named on the job) reads and lists J's records as
a holder does, and changes, submits and searches nothing. A grant never gives a role, and
callers who see the region are decided as before, without reading grants.
"""

from __future__ import annotations

from toex_kernel.errors import NotFound, OutOfScope, PermissionDenied
from toex_kernel.grants import JobGrant, covered, covered_for_reading, job_of
from toex_kernel.installation import Served, served_for
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

# Where each request names the region of what it reaches: an installation holds and sends to
# the PND only its own region's intelligence (toex_kernel.installation); `regions/-` reads its
# own. A reconciliation is the installation's own (of what it has sent).
_OWN_RECONCILIATION = "a reconciliation of what this installation has sent to the PND"
SERVED = served_for(
    SERVICE,
    {
        "SubmitIntelligence": Served.by("parent"),
        "UpdateIntelligence": Served.by("record.name"),
        "DeleteIntelligence": Served.by("name"),
        "GetIntelligence": Served.by("name"),
        "ListIntelligence": Served.listing_of("parent"),
        "ReleaseIntelligence": Served.by("name"),
        "ListSubmissions": Served.by("parent"),
        "GetSyncStatus": Served.listing_of("name", empty="regions/-/syncStatus"),
        "SearchPnd": Served.by("parent"),
        "RunReconciliation": Served.nowhere(_OWN_RECONCILIATION),
        "GetReconciliation": Served.nowhere(_OWN_RECONCILIATION),
        "ListReconciliationItems": Served.filtered_by("region"),
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


def needs_grant(principal: Principal, region: Region, purpose: str) -> bool:
    """Whether a grant could change the answer: the caller does not see `region` and the call's
    purpose names one of its jobs. Only then is a grant read."""
    return not sees(principal, region) and bool(job_of(purpose, region))


def works_under(principal: Principal, region: Region, grant: JobGrant | None) -> bool:
    """The caller holds the grant's open job, of `region`."""
    return grant is not None and covered(grant, principal, region, grant.job)


def ensure_visible(
    principal: Principal, record: IntelligenceRecord | None, name: str, grant: JobGrant | None = None
) -> IntelligenceRecord:
    if record is None:
        raise NotFound(f"record {name} not found")
    # Holders of the record's job read it, and so does a collaborating region's supervisor; only
    # holders change it (ensure_can_write).
    if not sees(principal, record.region) and not covered_for_reading(
        grant, principal, record.region, record.job
    ):
        raise OutOfScope(f"record {name} not found")
    return record


def ensure_can_write(principal: Principal, region: Region, grant: JobGrant | None = None) -> None:
    if not sees(principal, region) and not works_under(principal, region, grant):
        raise PermissionDenied(f"you may record intelligence for {principal.region.value} only")


def ensure_can_release(principal: Principal, record: IntelligenceRecord) -> None:
    if principal.has(NC) or (principal.has(SUP) and principal.region is record.region):
        return
    raise PermissionDenied("only a supervisor of the owning region or a national coordinator may release")


def ensure_can_search(principal: Principal, region: Region, grant: JobGrant | None = None) -> None:
    if not sees(principal, region) and not works_under(principal, region, grant):
        raise PermissionDenied(f"you may search for {principal.region.value} only")


def listed(
    principal: Principal, requested: Region | None, grant: JobGrant | None = None
) -> tuple[frozenset[Region] | None, str]:
    """The regions a listing reads (None: every region) and the one job it is confined to ("":
    none): a holder of `grant` listing the grant's region sees that job's records alone."""
    if grant is not None and requested is not None and not sees(principal, requested):
        if covered_for_reading(grant, principal, requested, grant.job):
            return frozenset({requested}), grant.job
    return visible_regions(principal, requested), ""
