"""Work under a job grant, decided by the handlers with FakeGrants: a holder of job J of EMSOU
with a safeguarding role reads J's referrals and adds evidence to them, under J as the purpose,
and nothing else of EMSOU; a supervisor of a region collaborating on J reads them and changes
nothing; a researcher holding J gets nothing (a grant gives no role); callers who see EMSOU
today are decided as before, without reading a grant."""

from __future__ import annotations

from datetime import datetime

import pytest
from toex_common.testing.fakes import FakeGrants, principal
from toex_kernel.errors import NotFound, OutOfScope, PermissionDenied
from toex_kernel.grants import JobGrant
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_safeguarding.domain import commands, policy
from toex_safeguarding.domain.calendar import LONDON
from toex_safeguarding.domain.model import Evidence, Referral, Subject
from toex_safeguarding.domain.values import (
    AgeBand,
    Concern,
    ConsentStatus,
    DecisionKind,
    Destination,
    EvidenceKind,
    Outcome,
    RiskLevel,
)
from toex_safeguarding.service_layer import handlers

from .fakes import FakeJobs, FakeSafeguardingUnitOfWork

NOW = datetime(2025, 4, 14, 9, 0, tzinfo=LONDON)
JOB = "regions/EMSOU/jobs/job1"
OTHER_JOB = "regions/EMSOU/jobs/job2"
SO = principal("safeguarding_officer.emsou", Role.SAFEGUARDING_OFFICER)
SUP = principal("supervisor.emsou", Role.SUPERVISOR)
NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
# The holder: an officer of another region whom the job names.
HOLDER = principal("safeguarding_officer.ersou", Role.SAFEGUARDING_OFFICER)
HOLDER_SUP = principal("supervisor.ersou", Role.SUPERVISOR)
NOT_HOLDING = principal("safeguarding_officer.rocuwm", Role.SAFEGUARDING_OFFICER)
RESEARCHER_HOLDING = principal("researcher.london", Role.RESEARCHER)
RESEARCHER_OWNER = principal("researcher.emsou", Role.RESEARCHER)
# Of ERSOU, a region collaborating on the job (not holding it): only a supervisor reads.
COLLAB_SUP = principal("supervisor2.ersou", Role.SUPERVISOR)
COLLAB_OFFICER = principal("safeguarding_officer2.ersou", Role.SAFEGUARDING_OFFICER)
COLLAB_RESEARCHER = principal("researcher.ersou", Role.RESEARCHER)
# A supervisor of a region the job does not name.
OTHER_SUP = principal("supervisor.rocuwm", Role.SUPERVISOR)


class CountingGrants(FakeGrants):
    """FakeGrants that counts its reads: owners must not pay for grants."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def of_job(self, job: str) -> JobGrant | None:
        self.reads += 1
        return await super().of_job(job)

    async def for_purpose(self, purpose: str) -> JobGrant | None:
        self.reads += 1
        return await super().for_purpose(purpose)


@pytest.fixture
def uow() -> FakeSafeguardingUnitOfWork:
    uow = FakeSafeguardingUnitOfWork()
    uow.grants = CountingGrants()
    uow.grants.grant(JOB, HOLDER.username, HOLDER_SUP.username, RESEARCHER_HOLDING.username)
    uow.grants.grant(OTHER_JOB, HOLDER.username)
    return uow


@pytest.fixture
def deps(uow: FakeSafeguardingUnitOfWork) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, clock=lambda: NOW, jobs=FakeJobs(JOB, OTHER_JOB))  # type: ignore[arg-type,return-value]


async def draft(deps: handlers.Deps, subject: str, job: str = "") -> Referral:
    return await handlers.create_referral(
        commands.CreateReferral(
            SO,
            Region.EMSOU,
            Subject(subject, age_band=AgeBand.CHILD, local_authority="Derby City"),
            [Concern.CHILD_SEXUAL_EXPLOITATION],
            RiskLevel.HIGH,
            linked_job=job,
        ),
        deps,
    )


@pytest.fixture
async def referrals(deps: handlers.Deps) -> tuple[Referral, Referral, Referral]:
    """J's referral, one of another EMSOU job the holder also holds, and one with no job."""
    return (
        await draft(deps, "ent-job", JOB),
        await draft(deps, "ent-other-job", OTHER_JOB),
        await draft(deps, "ent-no-job"),
    )


def get(actor: object, referral: Referral, purpose: str = JOB) -> commands.GetReferral:
    return commands.GetReferral(actor, Region.EMSOU, referral.id, purpose)  # type: ignore[arg-type]


def listing(
    actor: object, purpose: str = JOB, region: Region | None = Region.EMSOU
) -> commands.ListReferrals:
    return commands.ListReferrals(actor, region, frozenset(), False, 50, None, purpose)  # type: ignore[arg-type]


def add_evidence(
    actor: object, referral: Referral, ref: str, purpose: str = JOB, request_id: str = ""
) -> commands.UpdateReferral:
    return commands.UpdateReferral(
        actor,  # type: ignore[arg-type]
        Region.EMSOU,
        referral.id,
        commands.Revision(evidence=[Evidence(EvidenceKind.DATASET, ref, "call data")]),
        commands.Idempotency(request_id, "fp") if request_id else None,
        purpose=purpose,
    )


async def test_the_holder_reads_lists_and_adds_evidence_to_the_jobs_referrals(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    assert (await handlers.get_referral(get(HOLDER, mine), deps)).id == mine.id
    # The CLI's short form of the job is the same purpose.
    assert (await handlers.get_referral(get(HOLDER, mine, "EMSOU/job1"), deps)).id == mine.id
    page, more = await handlers.list_referrals(listing(HOLDER), deps)
    assert [r.id for r in page] == [mine.id] and not more

    updated = await handlers.update_referral(add_evidence(HOLDER, mine, "regions/EMSOU/datasets/d9"), deps)
    added = [e for e in updated.evidence if e.ref == "regions/EMSOU/datasets/d9"]
    assert [e.added_by for e in added] == [HOLDER.username]
    # Stored and published as the job region's material, labelled with that region.
    assert uow.referrals.referrals[mine.id].region is Region.EMSOU
    [event] = [e for e in uow.committed_events if e.event_type.endswith("ReferralEvidenceAdded")]
    assert event.headers["toex-region"] == "EMSOU" and event.subject.startswith("toex.emsou.")


async def test_the_regions_other_referrals_are_not_found(
    deps: handlers.Deps, referrals: tuple[Referral, ...]
) -> None:
    _, other_job, no_job = referrals
    for referral in (other_job, no_job):
        with pytest.raises(OutOfScope):
            await handlers.get_referral(get(HOLDER, referral), deps)
        with pytest.raises(OutOfScope):
            await handlers.update_referral(add_evidence(HOLDER, referral, "d-x"), deps)
    # Under the other job the holder reaches that job's referral, and only that one.
    page, _ = await handlers.list_referrals(listing(HOLDER, OTHER_JOB), deps)
    assert [r.id for r in page] == [other_job.id]


async def test_a_closed_grant_is_refused(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    await handlers.get_referral(get(HOLDER, mine), deps)
    uow.grants.grant(JOB, HOLDER.username, open=False)
    with pytest.raises(OutOfScope):
        await handlers.get_referral(get(HOLDER, mine), deps)
    with pytest.raises(OutOfScope):
        await handlers.update_referral(add_evidence(HOLDER, mine, "d-late"), deps)
    with pytest.raises(PermissionDenied):  # as any listing of another region
        await handlers.list_referrals(listing(HOLDER), deps)


async def test_someone_not_holding_the_job_is_refused(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    uow.grants.grant(JOB, "someone.else")  # taken off the job: the holders are the job's now
    for actor in (HOLDER, NOT_HOLDING):
        with pytest.raises(OutOfScope):
            await handlers.get_referral(get(actor, mine), deps)
        with pytest.raises(OutOfScope):
            await handlers.update_referral(add_evidence(actor, mine, "d-y"), deps)
        with pytest.raises(PermissionDenied):
            await handlers.list_referrals(listing(actor), deps)


async def test_a_purpose_not_naming_the_job_is_refused(
    deps: handlers.Deps, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    for purpose in ("Op SANDPIPER", "", OTHER_JOB, "regions/ERSOU/jobs/job1"):
        with pytest.raises(OutOfScope):
            await handlers.get_referral(get(HOLDER, mine, purpose), deps)
        with pytest.raises(OutOfScope):
            await handlers.update_referral(add_evidence(HOLDER, mine, "d-z", purpose), deps)
    for purpose in ("Op SANDPIPER", ""):
        with pytest.raises(PermissionDenied):
            await handlers.list_referrals(listing(HOLDER, purpose), deps)
    # A listing of the caller's own region, or of every region, is what it was: their own region's.
    for region in (Region.ERSOU, None):
        page, _ = await handlers.list_referrals(listing(HOLDER, JOB, region), deps)
        assert page == []


async def test_the_holder_does_not_do_the_owning_regions_officers_work(
    deps: handlers.Deps, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    with pytest.raises(PermissionDenied):  # drafting in the job's region, even linked to the job
        await handlers.create_referral(
            commands.CreateReferral(
                HOLDER, Region.EMSOU, Subject("ent-new"), [Concern.OTHER], RiskLevel.LOW, linked_job=JOB
            ),
            deps,
        )
    changes = [
        commands.Revision(consent=ConsentStatus.REFUSED),
        commands.Revision(destinations=[Destination.NRM]),
        commands.Revision(linked_job=""),
        # Evidence together with anything else is more than evidence.
        commands.Revision(
            risk_level=RiskLevel.LOW, evidence=[Evidence(EvidenceKind.DATASET, "d-1", "call data")]
        ),
    ]
    for revision in changes:
        with pytest.raises(OutOfScope):
            await handlers.update_referral(
                commands.UpdateReferral(HOLDER, Region.EMSOU, mine.id, revision, purpose=JOB), deps
            )
    transition = commands.Transition(HOLDER, Region.EMSOU, mine.id)
    with pytest.raises(OutOfScope):
        await handlers.submit_for_approval(transition, deps)
    with pytest.raises(OutOfScope):
        await handlers.close_referral(transition, deps)
    with pytest.raises(OutOfScope):
        await handlers.record_submission(
            commands.RecordSubmission(HOLDER, Region.EMSOU, mine.id, Destination.CHILDRENS_SOCIAL_CARE), deps
        )
    with pytest.raises(OutOfScope):
        await handlers.record_decision(
            commands.RecordDecision(
                HOLDER,
                Region.EMSOU,
                mine.id,
                Destination.CHILDRENS_SOCIAL_CARE,
                DecisionKind.LOCAL_AUTHORITY,
                Outcome.POSITIVE,
            ),
            deps,
        )
    # A supervisor holding the job does not approve the job region's referrals.
    await handlers.submit_for_approval(commands.Transition(SO, Region.EMSOU, mine.id), deps)
    with pytest.raises(PermissionDenied):
        await handlers.approve_referral(commands.Transition(HOLDER_SUP, Region.EMSOU, mine.id), deps)
    with pytest.raises(PermissionDenied):
        await handlers.return_referral(commands.Transition(HOLDER_SUP, Region.EMSOU, mine.id, "no"), deps)
    with pytest.raises(PermissionDenied):  # the overdue list is the owning region's
        await handlers.list_overdue(commands.ListOverdue(HOLDER, Region.EMSOU, 10), deps)


async def test_a_researcher_holding_the_job_gets_no_role(
    deps: handlers.Deps, referrals: tuple[Referral, ...]
) -> None:
    """Tasking assigns jobs to researchers; in this service they hold no role, in their own
    region or under a grant (the method rules refuse them first; the policy does too)."""
    mine = referrals[0]
    for researcher in (RESEARCHER_HOLDING, RESEARCHER_OWNER):
        with pytest.raises(OutOfScope):
            await handlers.get_referral(get(researcher, mine), deps)
        with pytest.raises(PermissionDenied):
            await handlers.list_referrals(listing(researcher), deps)
        with pytest.raises(NotFound):
            await handlers.update_referral(add_evidence(researcher, mine, "d-r"), deps)


def test_the_policy_gives_a_grant_no_role(referrals: tuple[Referral, ...]) -> None:
    """Decided by the policy itself, whatever a handler reads: the job's grant names the
    researcher, yet it shows them nothing, while it shows the holder with a role the job's
    referral."""
    mine = referrals[0]
    grant = JobGrant(JOB, Region.EMSOU, frozenset({RESEARCHER_HOLDING.username, HOLDER.username}), True)
    assert not policy.can_see(RESEARCHER_HOLDING, mine, grant)
    assert not policy.needs_grant(RESEARCHER_HOLDING, Region.EMSOU)
    with pytest.raises(PermissionDenied):
        policy.listing(RESEARCHER_HOLDING, Region.EMSOU, grant)
    with pytest.raises(PermissionDenied):
        policy.ensure_can_add_evidence(RESEARCHER_HOLDING, mine, grant)
    assert policy.can_see(HOLDER, mine, grant)
    assert policy.listing(HOLDER, Region.EMSOU, grant) == policy.Listing(frozenset({Region.EMSOU}), JOB)


async def test_a_remembered_request_does_not_outlive_the_grant(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    request = add_evidence(HOLDER, mine, "d-once", request_id="req-1")
    first = await handlers.update_referral(request, deps)
    assert (await handlers.update_referral(request, deps)).id == first.id  # a repeat: the first answer
    uow.grants.grant(JOB, HOLDER.username, open=False)
    with pytest.raises(OutOfScope):
        await handlers.update_referral(request, deps)


async def test_the_owning_region_is_decided_as_before_without_reading_grants(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    grants = uow.grants
    assert isinstance(grants, CountingGrants)
    grants.reads = 0
    for referral in referrals:
        assert (await handlers.get_referral(get(SO, referral, "Op SANDPIPER"), deps)).id == referral.id
        assert (await handlers.get_referral(get(NC, referral, "overdue review"), deps)).id == referral.id
    page, _ = await handlers.list_referrals(listing(SO, "Op SANDPIPER"), deps)
    assert {r.id for r in page} == {r.id for r in referrals}  # all of them, not one job's
    page, _ = await handlers.list_referrals(listing(NC, "Op SANDPIPER", None), deps)
    assert len(page) == 3
    await handlers.update_referral(add_evidence(SO, referrals[0], "d-owner", "Op SANDPIPER"), deps)
    await handlers.submit_for_approval(commands.Transition(SO, Region.EMSOU, referrals[0].id), deps)
    await handlers.approve_referral(commands.Transition(SUP, Region.EMSOU, referrals[0].id), deps)
    assert grants.reads == 0


def collaborate(uow: FakeSafeguardingUnitOfWork, *holders: str, open: bool = True) -> None:
    """J names ERSOU as a collaborating region; its holders are `holders` (HOLDER by default)."""
    uow.grants.grant(
        JOB, *(holders or (HOLDER.username,)), open=open, collaborators=frozenset({Region.ERSOU})
    )


async def test_a_collaborating_regions_supervisor_reads_and_lists_the_jobs_referrals(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    mine, other_job, no_job = referrals
    # Before ERSOU collaborates, its supervisor (holding nothing) reaches nothing of EMSOU.
    with pytest.raises(OutOfScope):
        await handlers.get_referral(get(COLLAB_SUP, mine), deps)
    collaborate(uow)
    assert (await handlers.get_referral(get(COLLAB_SUP, mine), deps)).id == mine.id
    assert (await handlers.get_referral(get(COLLAB_SUP, mine, "EMSOU/job1"), deps)).id == mine.id
    page, more = await handlers.list_referrals(listing(COLLAB_SUP), deps)
    assert [r.id for r in page] == [mine.id] and not more
    # Only J's referrals, only with J as the purpose, and their own region's listing is theirs.
    for referral in (other_job, no_job):
        with pytest.raises(OutOfScope):
            await handlers.get_referral(get(COLLAB_SUP, referral), deps)
    for purpose in ("Op SANDPIPER", OTHER_JOB):
        with pytest.raises(OutOfScope):
            await handlers.get_referral(get(COLLAB_SUP, mine, purpose), deps)
    with pytest.raises(PermissionDenied):
        await handlers.list_referrals(listing(COLLAB_SUP, "Op SANDPIPER"), deps)
    assert (await handlers.list_referrals(listing(COLLAB_SUP, JOB, Region.ERSOU), deps))[0] == []


async def test_only_a_supervisor_of_a_collaborating_region_reads(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    collaborate(uow)
    # ERSOU's officer who is not a supervisor, and a supervisor of a region J does not name.
    for actor in (COLLAB_OFFICER, OTHER_SUP):
        with pytest.raises(OutOfScope):
            await handlers.get_referral(get(actor, mine), deps)
        with pytest.raises(PermissionDenied):
            await handlers.list_referrals(listing(actor), deps)
        with pytest.raises(OutOfScope):
            await handlers.update_referral(add_evidence(actor, mine, "d-c"), deps)
    # ERSOU's researcher: no role here, collaborating or not.
    with pytest.raises(OutOfScope):
        await handlers.get_referral(get(COLLAB_RESEARCHER, mine), deps)
    with pytest.raises(PermissionDenied):
        await handlers.list_referrals(listing(COLLAB_RESEARCHER), deps)
    # The job closed: the collaborating supervisor reads no more.
    collaborate(uow, open=False)
    with pytest.raises(OutOfScope):
        await handlers.get_referral(get(COLLAB_SUP, mine), deps)
    with pytest.raises(PermissionDenied):
        await handlers.list_referrals(listing(COLLAB_SUP), deps)


async def test_a_collaborating_supervisor_changes_nothing(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    mine = referrals[0]
    collaborate(uow)
    # Evidence, which a holder may add: refused (they see the referral, so not "not found").
    with pytest.raises(PermissionDenied):
        await handlers.update_referral(add_evidence(COLLAB_SUP, mine, "regions/EMSOU/datasets/d7"), deps)
    with pytest.raises(OutOfScope):  # anything else: as another region's referral
        await handlers.update_referral(
            commands.UpdateReferral(
                COLLAB_SUP, Region.EMSOU, mine.id, commands.Revision(risk_level=RiskLevel.LOW), purpose=JOB
            ),
            deps,
        )
    with pytest.raises(OutOfScope):
        await handlers.submit_for_approval(commands.Transition(COLLAB_SUP, Region.EMSOU, mine.id), deps)
    with pytest.raises(OutOfScope):
        await handlers.close_referral(commands.Transition(COLLAB_SUP, Region.EMSOU, mine.id, "done"), deps)
    await handlers.submit_for_approval(commands.Transition(SO, Region.EMSOU, mine.id), deps)
    before = len(uow.committed_events)
    with pytest.raises(PermissionDenied):
        await handlers.approve_referral(commands.Transition(COLLAB_SUP, Region.EMSOU, mine.id), deps)
    with pytest.raises(PermissionDenied):
        await handlers.list_overdue(commands.ListOverdue(COLLAB_SUP, Region.EMSOU, 10), deps)
    stored = uow.referrals.referrals[mine.id]
    assert not any(e.ref == "regions/EMSOU/datasets/d7" for e in stored.evidence)
    assert stored.risk_level is RiskLevel.HIGH and stored.approved_by == ""
    assert len(uow.committed_events) == before


async def test_a_remembered_request_is_not_answered_to_a_holder_turned_collaborating_reader(
    deps: handlers.Deps, uow: FakeSafeguardingUnitOfWork, referrals: tuple[Referral, ...]
) -> None:
    """ERSOU's supervisor held J and added evidence; taken off J while ERSOU collaborates, they
    read J's referral still, but a repeat of the change is refused, not answered."""
    mine = referrals[0]
    request = add_evidence(HOLDER_SUP, mine, "d-sup", request_id="req-sup")
    await handlers.update_referral(request, deps)
    collaborate(uow)  # HOLDER only; ERSOU collaborates
    assert (await handlers.get_referral(get(HOLDER_SUP, mine), deps)).id == mine.id
    with pytest.raises(PermissionDenied):
        await handlers.update_referral(request, deps)


def test_the_policy_admits_a_collaborating_supervisor_to_read_only(referrals: tuple[Referral, ...]) -> None:
    mine, other_job, _ = referrals
    grant = JobGrant(JOB, Region.EMSOU, frozenset({HOLDER.username}), True, frozenset({Region.ERSOU}))
    assert policy.can_see(COLLAB_SUP, mine, grant) and not policy.can_see(COLLAB_SUP, other_job, grant)
    assert not policy.under_grant(COLLAB_SUP, mine, grant)
    assert policy.listing(COLLAB_SUP, Region.EMSOU, grant) == policy.Listing(frozenset({Region.EMSOU}), JOB)
    with pytest.raises(PermissionDenied):
        policy.ensure_can_add_evidence(COLLAB_SUP, mine, grant)
    for actor in (COLLAB_OFFICER, OTHER_SUP, COLLAB_RESEARCHER):
        assert not policy.can_see(actor, mine, grant)
    # A grant naming no collaborators: ERSOU's supervisor reads nothing.
    alone = JobGrant(JOB, Region.EMSOU, frozenset({HOLDER.username}), True)
    assert not policy.can_see(COLLAB_SUP, mine, alone)
    with pytest.raises(PermissionDenied):
        policy.listing(COLLAB_SUP, Region.EMSOU, alone)
