"""Who may do what with jobs: the tasking service's one policy module.

- national_coordinator: raises, reads and manages jobs in every region; assigns a job to a
  researcher of any region.
- supervisor: raises, assigns (their own region's researchers), updates and reads jobs of their
  own region; reads, and only reads, the jobs their region collaborates on.
- researcher: reads and updates jobs owned by their region or assigned to them (tasking
  resilience brings other regions' jobs to them).
- safeguarding_officer: reads a job of their own region (a referral links a job its author
  may see; the safeguarding service asks with the officer's own token).
- service accounts: read jobs and add notes (other services link their work to jobs); the
  hub's (region NATIONAL) in every region, a region installation's in its region only.
Everyone else is refused at the method level. A job outside the caller's scope is reported
as not found, exactly like a job that does not exist; a job seen only as a collaborator
refuses every change with PERMISSION_DENIED.

The inbox (InboxService): every person reads and marks their own inbox, whatever their role;
service accounts have none. No purpose is asked for: an inbox holds only what its reader may
see in their own right (items addressed to them by name, and items addressed to roles they hold
of the regions they may see), each a type, a one-line summary and a resource name; reading
the resource itself asks for a purpose as usual. Every call is audited by the interceptor.
"""

from __future__ import annotations

from dataclasses import dataclass

from toex_kernel.errors import NotFound, OutOfScope, PermissionDenied
from toex_kernel.installation import Served, served_for
from toex_kernel.policy import MethodRule, all_roles_except, rules_for, sees_region, service_sees_all
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_tasking.domain.inbox import Audience, Recipient
from toex_tasking.domain.model import Job, JobState

SERVICE = "toex.tasking.v1.TaskingService"
INBOX_SERVICE = "toex.tasking.v1.InboxService"

NC, SUP, RES, SVC = Role.NATIONAL_COORDINATOR, Role.SUPERVISOR, Role.RESEARCHER, Role.SERVICE
SAFE = Role.SAFEGUARDING_OFFICER
# Every role a person holds: each has an inbox (a service account has none).
PEOPLE = tuple(sorted(all_roles_except([SVC])))

METHOD_RULES = rules_for(
    SERVICE,
    {
        "CreateJob": MethodRule.write(NC, SUP),
        "GetJob": MethodRule.read(NC, SUP, RES, SAFE, SVC),
        "ListJobs": MethodRule.read(NC, SUP, RES, SVC),
        "UpdateJob": MethodRule.write(NC, SUP),
        "AssignJob": MethodRule.write(NC, SUP),
        "ReassignJob": MethodRule.write(NC, SUP),
        "UpdateJobStatus": MethodRule.write(NC, SUP, RES),
        "AddJobNote": MethodRule.write(NC, SUP, RES, SVC),
        "RecordFeedback": MethodRule.write(NC, SUP),
        "GetRegionCapacity": MethodRule.read(NC, SUP, purpose_required=False),
    },
) | rules_for(
    INBOX_SERVICE,
    {
        "ListInboxItems": MethodRule.read(*PEOPLE, purpose_required=False),
        "MarkInboxItemsRead": MethodRule.write(*PEOPLE),
        "WatchInbox": MethodRule.read(*PEOPLE, purpose_required=False),
    },
)

# Where each request names the region of the job it reaches: an installation serves only its
# own region's jobs (toex_kernel.installation); `regions/-` lists the jobs it holds.
SERVED = served_for(
    SERVICE,
    {
        "CreateJob": Served.by("parent"),
        "GetJob": Served.by("name"),
        "ListJobs": Served.listing_of("parent"),
        "UpdateJob": Served.by("job.name"),
        "AssignJob": Served.by("name"),
        "ReassignJob": Served.by("name"),
        "UpdateJobStatus": Served.by("name"),
        "AddJobNote": Served.by("parent"),
        "RecordFeedback": Served.by("name"),
        "GetRegionCapacity": Served.by("name"),
    },
) | served_for(
    INBOX_SERVICE,
    {
        "ListInboxItems": Served.nowhere("the caller's own inbox"),
        "MarkInboxItemsRead": Served.nowhere("the caller's own inbox"),
        "WatchInbox": Served.nowhere("the caller's own inbox"),
    },
)

# What a researcher may do to a job's state; supervisors and coordinators may do any valid move.
RESEARCHER_STATES = frozenset({JobState.IN_PROGRESS, JobState.DELIVERED})


def _sees_in_own_right(principal: Principal, job: Job) -> bool:
    if principal.has(NC) or service_sees_all(principal):
        return True
    if principal.has(SUP, SAFE, SVC) and job.region is principal.region:
        return True
    if principal.has(RES):
        return job.region is principal.region or job.assigned_to(principal.username)
    return False


def collaborates(principal: Principal, job: Job) -> bool:
    """A supervisor of a region collaborating on the job: sees it, changes nothing."""
    return principal.has(SUP) and principal.region in job.collaborating_regions


def can_see(principal: Principal, job: Job) -> bool:
    return _sees_in_own_right(principal, job) or collaborates(principal, job)


def ensure_visible(principal: Principal, job: Job | None, name: str) -> Job:
    if job is None:
        raise NotFound(f"job {name} not found")
    if not can_see(principal, job):
        raise OutOfScope(f"job {name} not found")
    return job


def ensure_may_change(principal: Principal, job: Job) -> None:
    """Before any change to a visible job: a collaborating region's supervisor only reads it."""
    if not _sees_in_own_right(principal, job):
        raise PermissionDenied(
            f"{principal.region.value} collaborates on this job: its supervisors see it read-only"
        )


def ensure_can_create(principal: Principal, region: Region) -> None:
    if principal.has(NC):
        return
    if principal.has(SUP) and region is principal.region:
        return
    raise PermissionDenied(f"you may raise jobs in {principal.region.value} only")


def ensure_can_manage(principal: Principal, job: Job) -> None:
    """Assign, reassign, update, record feedback: the owning region's supervisor or a coordinator."""
    if principal.has(NC) or (principal.has(SUP) and job.region is principal.region):
        return
    raise PermissionDenied("only a supervisor of the owning region or a national coordinator may do this")


def may_assign_across_regions(principal: Principal) -> bool:
    """A national coordinator assigns any region's researcher straight away; a supervisor assigns
    their own region's (another region's researcher takes a job by ReassignJob)."""
    return principal.has(NC)


def ensure_can_move(principal: Principal, job: Job, to: JobState) -> None:
    if principal.has(NC) or (principal.has(SUP) and job.region is principal.region):
        return
    if principal.has(RES) and to in RESEARCHER_STATES:
        return
    raise PermissionDenied(f"a researcher may move a job to {' or '.join(sorted(RESEARCHER_STATES))} only")


@dataclass(frozen=True)
class ListScope:
    """The jobs a caller may list: those owned by `regions` (None: every region), those assigned
    to `assigned_to`, those `collaborating` collaborates on; of all these, only `owner`'s when set."""

    regions: frozenset[Region] | None
    assigned_to: str | None = None
    collaborating: Region | None = None
    owner: Region | None = None


def list_scope(principal: Principal, requested: Region | None) -> ListScope:
    """What ListJobs may return to `principal` for `regions/{requested}` (None: `regions/-`)."""
    if principal.has(NC) or service_sees_all(principal):
        return ListScope(regions=frozenset({requested}) if requested else None)
    own = principal.region
    mine = requested is None or requested is own
    whole_region = mine and principal.has(SUP, SVC, RES)
    # Another region's jobs: those assigned to a researcher, those a supervisor's region
    # collaborates on; nothing else of that region.
    assigned, collaborating = principal.has(RES), principal.has(SUP)
    if not (whole_region or assigned or collaborating):
        raise PermissionDenied(f"you may list jobs of {own.value} only")
    return ListScope(
        regions=frozenset({own}) if whole_region else frozenset(),
        assigned_to=principal.username if assigned else None,
        collaborating=own if collaborating else None,
        owner=requested,
    )


def ensure_can_see_capacity(principal: Principal, region: Region) -> None:
    if principal.has(NC) or (principal.has(SUP) and sees_region(principal, region)):
        return
    raise PermissionDenied(f"you may see the capacity of {principal.region.value} only")


def inbox_audience(principal: Principal) -> Audience:
    """Whose items a caller's inbox shows: those addressed to them by name, wherever they come
    from (an assignment to another region's job); and those addressed to each role they hold in
    their own region (national coordinators: nationally), of the regions they may see (their
    own; every region for the national team and national coordinators)."""
    national = principal.national or principal.has(NC)
    return Audience(
        username=principal.username,
        roles=frozenset(
            Recipient.holders(role, principal.region) for role in principal.roles if role is not SVC
        ),
        regions=None if national else frozenset({principal.region}),
    )
