"""Work under a job grant, with fakes: a London researcher holding an EMSOU job submits, changes,
reads, lists and searches that job's intelligence in EMSOU, and reaches nothing else of EMSOU."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from toex_common.testing.fakes import FakeGrants, principal
from toex_kernel.errors import OutOfScope, PermissionDenied
from toex_kernel.grants import JobGrant
from toex_kernel.principal import Principal
from toex_kernel.regions import Region
from toex_pnd.domain import commands
from toex_pnd.domain.model import IntelligenceRecord
from toex_pnd.service_layer import handlers
from toex_pnd.service_layer.ports import SearchAnswer

from .fakes import FakePnd, FakeUow

P = {"source_evaluation": "1", "intelligence_assessment": "B", "handling": "P", "handling_conditions": ""}
C = {**P, "handling": "C", "handling_conditions": "handler's consent"}
JOB = "regions/EMSOU/jobs/j1"
OTHER_JOB = "regions/EMSOU/jobs/j2"
OWNER = principal("researcher.emsou", "researcher")
HOLDER = principal("researcher.london", "researcher")
HOLDING_SUPERVISOR = principal("supervisor.london", "supervisor")
STRANGER = principal("researcher.ersou", "researcher")


class CountingGrants(FakeGrants):
    """Counts the grant look-ups: the region's own people must cause none."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def of_job(self, job: str) -> JobGrant | None:
        self.lookups += 1
        return await super().of_job(job)


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"r{self.n}"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


def deps() -> tuple[handlers.Deps, FakeUow, FakePnd, CountingGrants]:
    uow, pnd, grants = FakeUow(), FakePnd(), CountingGrants()
    uow.grants = grants
    grants.grant(JOB, HOLDER.username, HOLDING_SUPERVISOR.username)
    grants.grant(OTHER_JOB, "researcher.emsou")
    return handlers.Deps(uow=lambda: uow, pnd=pnd, clock=Clock(), new_id=Ids()), uow, pnd, grants


def phone(number: str = "+447700900123") -> dict:
    return {"phone": {"e164": number}}


async def submit(d: handlers.Deps, actor: Principal, purpose: str, grading: dict = P) -> IntelligenceRecord:
    return await handlers.submit_intelligence(
        commands.SubmitIntelligence(actor, Region.EMSOU, phone(), grading, [], purpose=purpose), d
    )


async def get(
    d: handlers.Deps, actor: Principal, record: IntelligenceRecord, purpose: str
) -> IntelligenceRecord:
    return await handlers.get_intelligence(
        commands.GetIntelligence(actor, Region.EMSOU, record.id, purpose), d
    )


async def listing(
    d: handlers.Deps, actor: Principal, purpose: str, region: Region | None = Region.EMSOU
) -> set[str]:
    records, _ = await handlers.list_intelligence(
        commands.ListIntelligence(actor, region, frozenset(), None, False, 50, None, purpose), d
    )
    return {r.id for r in records}


async def update(
    d: handlers.Deps, actor: Principal, record: IntelligenceRecord, purpose: str
) -> IntelligenceRecord:
    return await handlers.update_intelligence(
        commands.UpdateIntelligence(
            actor, Region.EMSOU, record.id, phone("+447700900999"), None, None, purpose=purpose
        ),
        d,
    )


async def search(d: handlers.Deps, actor: Principal, purpose: str) -> None:
    await handlers.search_pnd(
        commands.SearchPnd(actor, Region.EMSOU, "PHONE", {"phone_e164": "07700 900123"}, purpose, 20), d
    )


async def test_the_holder_works_the_jobs_material_in_the_jobs_region() -> None:
    d, uow, _, _ = deps()
    made = await submit(d, HOLDER, JOB)
    # Stored in the job's region, attached to the job, queued for the PND like the region's own.
    assert made.region is Region.EMSOU and made.job == JOB and made.name.startswith("regions/EMSOU/")
    assert uow.records.rows[made.id].job == JOB and made.created_by == HOLDER.username
    [queued] = uow.submissions.rows.values()
    assert queued.region is Region.EMSOU
    # The owner's researcher's record for the job (made with the job as purpose, in the CLI's
    # `EMSOU/<id>` form) is the job's material too.
    theirs = await submit(d, OWNER, "EMSOU/j1")
    assert theirs.job == JOB

    assert (await get(d, HOLDER, theirs, JOB)).id == theirs.id
    assert (await update(d, HOLDER, made, JOB)).version == 2
    history = await handlers.list_submissions(commands.GetIntelligence(HOLDER, Region.EMSOU, made.id, JOB), d)
    assert [s.version for s in history] == [1, 2]
    assert await listing(d, HOLDER, JOB) == {made.id, theirs.id}


async def test_the_holder_reaches_nothing_of_the_region_not_attached_to_the_job() -> None:
    d, _, _, _ = deps()
    jobs = await submit(d, HOLDER, JOB)
    unattached = await submit(d, OWNER, "Op SANDPIPER")
    another_jobs = await submit(d, OWNER, OTHER_JOB)
    assert unattached.job == "" and another_jobs.job == OTHER_JOB
    for record in (unattached, another_jobs):
        with pytest.raises(OutOfScope):
            await get(d, HOLDER, record, JOB)
        with pytest.raises(OutOfScope):
            await update(d, HOLDER, record, JOB)
        with pytest.raises(OutOfScope):
            await handlers.list_submissions(commands.GetIntelligence(HOLDER, Region.EMSOU, record.id, JOB), d)
    # A listing of the region under the job lists the job's records alone; of every region, their own.
    assert await listing(d, HOLDER, JOB) == {jobs.id}
    assert await listing(d, HOLDER, JOB, region=None) == set()


async def test_what_stays_with_the_region_is_refused_to_the_holder() -> None:
    d, _, _, _ = deps()
    held = await submit(d, HOLDER, JOB, grading=C)
    # Releasing a held record is for a supervisor of the region, not one holding its job.
    with pytest.raises(OutOfScope):
        await handlers.release_intelligence(
            commands.ReleaseIntelligence(HOLDING_SUPERVISOR, Region.EMSOU, held.id, "handler consented"), d
        )
    # Withdrawing a record from the PND is the region's.
    with pytest.raises(PermissionDenied):
        await handlers.delete_intelligence(commands.DeleteIntelligence(HOLDER, Region.EMSOU, held.id), d)
    # The region's queue is the region's.
    with pytest.raises(PermissionDenied):
        await handlers.sync_status(HOLDER, Region.EMSOU, d)


async def test_a_closed_grant_reaches_nothing() -> None:
    d, uow, _, grants = deps()
    made = await submit(d, HOLDER, JOB)
    grants.grant(JOB, HOLDER.username, open=False)
    with pytest.raises(OutOfScope):
        await get(d, HOLDER, made, JOB)
    with pytest.raises(OutOfScope):
        await handlers.list_submissions(commands.GetIntelligence(HOLDER, Region.EMSOU, made.id, JOB), d)
    with pytest.raises(PermissionDenied):
        await update(d, HOLDER, made, JOB)
    with pytest.raises(PermissionDenied):
        await submit(d, HOLDER, JOB)
    with pytest.raises(PermissionDenied):
        await listing(d, HOLDER, JOB)
    with pytest.raises(PermissionDenied):
        await search(d, HOLDER, JOB)
    assert len(uow.records.rows) == 1


async def test_someone_not_holding_the_job_reaches_nothing() -> None:
    d, uow, _, _ = deps()
    made = await submit(d, HOLDER, JOB)
    with pytest.raises(OutOfScope):
        await get(d, STRANGER, made, JOB)
    with pytest.raises(PermissionDenied):
        await update(d, STRANGER, made, JOB)
    with pytest.raises(PermissionDenied):
        await submit(d, STRANGER, JOB)
    with pytest.raises(PermissionDenied):
        await listing(d, STRANGER, JOB)
    with pytest.raises(PermissionDenied):
        await search(d, STRANGER, JOB)
    assert len(uow.records.rows) == 1


@pytest.mark.parametrize(
    "purpose",
    ["Op SANDPIPER", OTHER_JOB, "regions/ERSOU/jobs/j1", "regions/EMSOU/jobs/j1/more", ""],
)
async def test_a_purpose_that_does_not_name_the_job_reaches_nothing(purpose: str) -> None:
    d, uow, _, _ = deps()
    made = await submit(d, HOLDER, JOB)
    with pytest.raises(OutOfScope):
        await get(d, HOLDER, made, purpose)
    with pytest.raises(PermissionDenied):
        await update(d, HOLDER, made, purpose)
    with pytest.raises(PermissionDenied):
        await submit(d, HOLDER, purpose)
    with pytest.raises(PermissionDenied):
        await listing(d, HOLDER, purpose)
    with pytest.raises(PermissionDenied):
        await search(d, HOLDER, purpose)
    assert len(uow.records.rows) == 1


async def test_the_holder_searches_the_pnd_for_the_job_on_the_regions_behalf() -> None:
    d, uow, pnd, _ = deps()
    pnd.found = SearchAnswer([], False)
    await search(d, HOLDER, JOB)
    [row] = uow.searches.rows
    assert row.region is Region.EMSOU and row.job == JOB and row.requested_by == HOLDER.username
    [event] = uow.committed_events
    assert event.subject == "toex.emsou.pnd.PndResultReceived"


async def test_the_regions_own_researcher_is_decided_as_before_without_reading_grants() -> None:
    d, _, _, grants = deps()
    theirs = await submit(d, OWNER, JOB)
    other = await submit(d, OWNER, "Op SANDPIPER")
    for purpose in (JOB, "Op SANDPIPER", OTHER_JOB):
        assert (await get(d, OWNER, theirs, purpose)).id == theirs.id
        assert await listing(d, OWNER, purpose) == {theirs.id, other.id}
        await update(d, OWNER, other, purpose)
        await search(d, OWNER, purpose)
    await handlers.delete_intelligence(commands.DeleteIntelligence(OWNER, Region.EMSOU, other.id), d)
    assert grants.lookups == 0
    # A job of another region named as the purpose attaches nothing.
    assert (await submit(d, OWNER, "regions/ERSOU/jobs/j9")).job == ""


async def test_a_collaborating_regions_supervisor_reads_the_jobs_records_and_changes_nothing() -> None:
    d, uow, _, _ = deps()
    made = await submit(d, HOLDER, JOB)
    mine = await submit(d, OWNER, "Op SANDPIPER")
    uow.grants.grant(JOB, HOLDER.username, collaborators=frozenset({Region.ERSOU}))
    supervisor = Principal("s", "supervisor.ersou", Region.ERSOU, HOLDING_SUPERVISOR.roles)
    assert (await get(d, supervisor, made, JOB)).id == made.id
    assert await listing(d, supervisor, JOB) == {made.id}
    with pytest.raises(OutOfScope):
        await get(d, supervisor, mine, JOB)
    with pytest.raises((OutOfScope, PermissionDenied)):
        await update(d, supervisor, made, JOB)
    with pytest.raises(PermissionDenied):
        await submit(d, supervisor, JOB)
    # a researcher of the collaborating region reads nothing
    with pytest.raises(OutOfScope):
        await get(d, Principal("s", "researcher.ersou", Region.ERSOU, HOLDER.roles), made, JOB)
