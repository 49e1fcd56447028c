"""Who may do what with jobs: the tasking service's one policy module.

- national_coordinator: raises, reads and manages jobs in every region.
- supervisor: raises, assigns and reads jobs of their own region.
- researcher: reads and updates jobs owned by their region or assigned to them (tasking
  resilience brings other regions' jobs to them).
- safeguarding_officer: reads a job of their own region (a referral links a job its author
  may see; the safeguarding service asks with the officer's own token).
- service accounts: read jobs and add notes (other services link their work to jobs); the
  hub's (region NATIONAL) in every region, a region installation's in its region only.
Everyone else is refused at the method level. A job outside the caller's scope is reported
as not found, exactly like a job that does not exist.
"""

from __future__ import annotations

from toex_kernel.errors import NotFound, OutOfScope, PermissionDenied
from toex_kernel.policy import MethodRule, rules_for, sees_region, service_sees_all
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_tasking.domain.model import Job, JobState

SERVICE = "toex.tasking.v1.TaskingService"

NC, SUP, RES, SVC = Role.NATIONAL_COORDINATOR, Role.SUPERVISOR, Role.RESEARCHER, Role.SERVICE
SAFE = Role.SAFEGUARDING_OFFICER

METHOD_RULES = rules_for(
    SERVICE,
    {
        "CreateJob": MethodRule.write(NC, SUP),
        "GetJob": MethodRule.read(NC, SUP, RES, SAFE, SVC),
        "ListJobs": MethodRule.read(NC, SUP, RES, SVC),
        "AssignJob": MethodRule.write(NC, SUP),
        "ReassignJob": MethodRule.write(NC, SUP),
        "UpdateJobStatus": MethodRule.write(NC, SUP, RES),
        "AddJobNote": MethodRule.write(NC, SUP, RES, SVC),
        "RecordFeedback": MethodRule.write(NC, SUP),
        "GetRegionCapacity": MethodRule.read(NC, SUP, purpose_required=False),
    },
)

# What a researcher may do to a job's state; supervisors and coordinators may do any valid move.
RESEARCHER_STATES = frozenset({JobState.IN_PROGRESS, JobState.DELIVERED})


def can_see(principal: Principal, job: Job) -> bool:
    if principal.has(NC) or service_sees_all(principal):
        return True
    if principal.has(SUP, SAFE, SVC) and job.region is principal.region:
        return True
    if principal.has(RES):
        return job.region is principal.region or job.assigned_to(principal.username)
    return False


def ensure_visible(principal: Principal, job: Job | None, name: str) -> Job:
    if job is None:
        raise NotFound(f"job {name} not found")
    if not can_see(principal, job):
        raise OutOfScope(f"job {name} not found")
    return job


def ensure_can_create(principal: Principal, region: Region) -> None:
    if principal.has(NC):
        return
    if principal.has(SUP) and region is principal.region:
        return
    raise PermissionDenied(f"you may raise jobs in {principal.region.value} only")


def ensure_can_manage(principal: Principal, job: Job) -> None:
    """Assign, reassign, record feedback: the owning region's supervisor or a coordinator."""
    if principal.has(NC) or (principal.has(SUP) and job.region is principal.region):
        return
    raise PermissionDenied("only a supervisor of the owning region or a national coordinator may do this")


def ensure_can_move(principal: Principal, job: Job, to: JobState) -> None:
    if principal.has(NC) or (principal.has(SUP) and job.region is principal.region):
        return
    if principal.has(RES) and to in RESEARCHER_STATES:
        return
    raise PermissionDenied(f"a researcher may move a job to {' or '.join(sorted(RESEARCHER_STATES))} only")


def visible_regions(principal: Principal, requested: Region | None) -> tuple[frozenset[Region] | None, bool]:
    """For listing: (regions whose jobs are visible in full or None for all, whether jobs assigned
    to the caller are visible too)."""
    if principal.has(NC) or service_sees_all(principal):
        return (frozenset({requested}) if requested else None), False
    own = principal.region
    if requested is not None and requested is not own and not principal.has(RES):
        raise PermissionDenied(f"you may list jobs of {own.value} only")
    if principal.has(SUP, SVC) and (requested is None or requested is own):
        return frozenset({own}), principal.has(RES)
    if principal.has(RES):
        if requested is None or requested is own:
            return frozenset({own}), True
        return frozenset(), True  # another region: only what is assigned to the caller
    raise PermissionDenied("you may not list jobs")


def ensure_can_see_capacity(principal: Principal, region: Region) -> None:
    if principal.has(NC) or (principal.has(SUP) and sees_region(principal, region)):
        return
    raise PermissionDenied(f"you may see the capacity of {principal.region.value} only")
