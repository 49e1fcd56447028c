"""Who may do what with referrals: the safeguarding service's one policy module.

- safeguarding officers and supervisors work the referrals of their own region (a national
  one, of every region); only a supervisor approves or returns.
- national coordinators read referrals and the overdue list of every region (they are who
  overdue decisions escalate to) but do not change referrals.
Everyone else is refused at the method level. A referral outside the caller's scope is reported
as not found, exactly like one that does not exist.

Work under a job grant (toex_kernel.grants). A safeguarding officer or supervisor of another
region who holds job J of region R (named by tasking as one of its assignees, while J is open)
and states J as the call's purpose may:
- read the referrals of R linked to J (GetReferral; ListReferrals of R lists J's only);
- add evidence to them (UpdateReferral whose mask is `evidence` alone; a draft, as for R's own
  officers).
Everything else stays with R's own officers and supervisors, because R's region answers to the
agencies for it: drafting a referral in R, changing a draft's subject, consent, concerns, risk,
destinations, job or handling, sending for approval, approving or returning, recording
submissions, acknowledgements and decisions, closing, and R's overdue list. Those calls, and any
call on R's other referrals, answer exactly as for another region's referral today (not found,
or refused for an approval or a listing).

A supervisor of a region collaborating on J (named on the job by tasking; toex_kernel.grants'
`covered_for_reading`), with J as the call's purpose, reads the referrals of R linked to J as a
holder does (GetReferral; ListReferrals of R lists J's only) and changes nothing: adding
evidence is refused (permission denied: they see the referral), everything else answers as for
another region's referral. Their region's officers who are not supervisors, and supervisors of
a region J does not name, reach nothing of R.

A grant never gives a role. Tasking assigns jobs to researchers, and a researcher holds no
safeguarding role: a researcher holding J is refused at the method level exactly as R's own
researchers are, and follows J's referrals on J itself (the referral events name the job, the
referral and its state, never its subject). No redacted view exists for them to be given.

Callers who see the referral's region today are decided as before, without reading grants.
"""

from __future__ import annotations

from dataclasses import dataclass

from toex_kernel.errors import NotFound, OutOfScope, PermissionDenied
from toex_kernel.grants import JobGrant, covered, covered_for_reading
from toex_kernel.installation import Served, served_for
from toex_kernel.policy import MethodRule, rules_for, sees_region
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_safeguarding.domain.model import Referral

SERVICE = "toex.safeguarding.v1.SafeguardingService"

SO, SUP, NC = Role.SAFEGUARDING_OFFICER, Role.SUPERVISOR, Role.NATIONAL_COORDINATOR

METHOD_RULES = rules_for(
    SERVICE,
    {
        "CreateReferral": MethodRule.write(SO, SUP, purpose_required=True),
        "GetReferral": MethodRule.read(SO, SUP, NC),
        "ListReferrals": MethodRule.read(SO, SUP, NC),
        "UpdateReferral": MethodRule.write(SO, SUP, purpose_required=True),
        "SubmitForApproval": MethodRule.write(SO, SUP, purpose_required=True),
        "ApproveReferral": MethodRule.write(SUP, purpose_required=True),
        "ReturnReferral": MethodRule.write(SUP, purpose_required=True),
        "RecordSubmission": MethodRule.write(SO, SUP, purpose_required=True),
        "RecordAcknowledgement": MethodRule.write(SO, SUP, purpose_required=True),
        "RecordDecision": MethodRule.write(SO, SUP, purpose_required=True),
        "CloseReferral": MethodRule.write(SO, SUP, purpose_required=True),
        "ListOverdue": MethodRule.read(SO, SUP, NC),
    },
)

# Where each request names the region of the referral it reaches: an installation serves only
# its own region's referrals (toex_kernel.installation); `regions/-` lists its own. A referral's
# linked job is checked by tasking (with the author's token), at this installation.
SERVED = served_for(
    SERVICE,
    {
        "CreateReferral": Served.by("parent"),
        "GetReferral": Served.by("name"),
        "ListReferrals": Served.listing_of("parent"),
        "UpdateReferral": Served.by("referral.name"),
        "SubmitForApproval": Served.by("name"),
        "ApproveReferral": Served.by("name"),
        "ReturnReferral": Served.by("name"),
        "RecordSubmission": Served.by("name"),
        "RecordAcknowledgement": Served.by("name"),
        "RecordDecision": Served.by("name"),
        "CloseReferral": Served.by("name"),
        "ListOverdue": Served.listing_of("parent"),
    },
)


def _reads_region(principal: Principal, region: Region) -> bool:
    return principal.has(NC) or (principal.has(SO, SUP) and sees_region(principal, region))


def needs_grant(principal: Principal, region: Region) -> bool:
    """Whether a job grant could change the answer for `region`: the caller holds a
    safeguarding role but does not see the region. Only then is a grant read."""
    return principal.has(SO, SUP) and not _reads_region(principal, region)


def under_grant(principal: Principal, referral: Referral, grant: JobGrant | None) -> bool:
    """The referral is linked to the grant's open job, of the referral's region, which the caller
    holds (and the caller holds a safeguarding role: the grant gives none)."""
    return principal.has(SO, SUP) and covered(grant, principal, referral.region, referral.linked_job)


def reads_under_grant(principal: Principal, referral: Referral, grant: JobGrant | None) -> bool:
    """As `under_grant`, or the caller is a supervisor of a region collaborating on the job:
    they read the job's referrals, and change nothing."""
    return principal.has(SO, SUP) and covered_for_reading(
        grant, principal, referral.region, referral.linked_job
    )


def can_see(principal: Principal, referral: Referral, grant: JobGrant | None = None) -> bool:
    return _reads_region(principal, referral.region) or reads_under_grant(principal, referral, grant)


def ensure_visible(
    principal: Principal, referral: Referral | None, name: str, grant: JobGrant | None = None
) -> Referral:
    if referral is None:
        raise NotFound(f"referral {name} not found")
    if not can_see(principal, referral, grant):
        raise OutOfScope(f"referral {name} not found")
    return referral


def ensure_can_work(principal: Principal, region: Region) -> None:
    """Drafting, changing, sending and closing: the region's own officers and supervisors."""
    if principal.has(SO, SUP) and sees_region(principal, region):
        return
    raise PermissionDenied(f"you may work safeguarding referrals of {principal.region.value} only")


def ensure_can_add_evidence(principal: Principal, referral: Referral, grant: JobGrant | None) -> None:
    if under_grant(principal, referral, grant):
        return
    if not sees_region(principal, referral.region) and reads_under_grant(principal, referral, grant):
        raise PermissionDenied(
            "a collaborating region's supervisor reads the job's referrals and changes nothing"
        )
    ensure_can_work(principal, referral.region)


def ensure_supervisor(principal: Principal, region: Region) -> None:
    if principal.has(SUP) and sees_region(principal, region):
        return
    raise PermissionDenied("only a supervisor of the owning region approves or returns referrals")


def visible_regions(principal: Principal, requested: Region | None) -> frozenset[Region] | None:
    """Regions whose referrals a listing may show (None: every region)."""
    if principal.has(NC) or (principal.national and principal.has(SO, SUP)):
        return frozenset({requested}) if requested else None
    if principal.has(SO, SUP):
        if requested is not None and requested is not principal.region:
            raise PermissionDenied(f"you may list referrals of {principal.region.value} only")
        return frozenset({principal.region})
    raise PermissionDenied("you may not list referrals")


@dataclass(frozen=True)
class Listing:
    regions: frozenset[Region] | None  # None: every region
    job: str = ""  # only the referrals linked to this job ("": any)


def listing(principal: Principal, requested: Region | None, grant: JobGrant | None = None) -> Listing:
    """What a listing of `requested` may show: the regions the caller sees, or, for a holder of
    `grant` (or a supervisor of a region collaborating on its job) listing the grant's region,
    that job's referrals alone."""
    if (
        requested is not None
        and grant is not None
        and needs_grant(principal, requested)
        and covered_for_reading(grant, principal, requested, grant.job)
    ):
        return Listing(frozenset({requested}), grant.job)
    return Listing(visible_regions(principal, requested))
