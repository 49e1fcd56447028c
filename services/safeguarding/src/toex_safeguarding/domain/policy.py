"""Who may do what with referrals: the safeguarding service's one policy module.

- safeguarding officers and supervisors work the referrals of their own region (a national
  one, of every region); only a supervisor approves or returns.
- national coordinators read referrals and the overdue list of every region (they are who
  overdue decisions escalate to) but do not change referrals.
Everyone else is refused at the method level. A referral outside the caller's scope is
reported as not found, exactly like one that does not exist.
"""

from __future__ import annotations

from toex_kernel.errors import NotFound, OutOfScope, PermissionDenied
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


def can_see(principal: Principal, referral: Referral) -> bool:
    if principal.has(NC):
        return True
    return principal.has(SO, SUP) and sees_region(principal, referral.region)


def ensure_visible(principal: Principal, referral: Referral | None, name: str) -> Referral:
    if referral is None:
        raise NotFound(f"referral {name} not found")
    if not can_see(principal, referral):
        raise OutOfScope(f"referral {name} not found")
    return referral


def ensure_can_work(principal: Principal, region: Region) -> None:
    if principal.has(SO, SUP) and sees_region(principal, region):
        return
    raise PermissionDenied(f"you may work safeguarding referrals of {principal.region.value} only")


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
