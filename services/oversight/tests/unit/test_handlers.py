"""The projections and the overview with fakes: what the counters hold after events in any order,
and who is answered for which regions."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from toex_common.testing.fakes import principal
from toex_kernel.errors import InvalidArgument, PermissionDenied
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_oversight.domain import commands
from toex_oversight.domain.model import (
    ClockRecord,
    Figure,
    JobFacts,
    Key,
    Reconciliation,
    ReferralFacts,
)
from toex_oversight.service_layer import handlers

from .fakes import FakeOversightUnitOfWork, FakeReader

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
NOW = T0 + timedelta(days=10)
NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
NC_EMSOU = principal("national_coordinator.emsou", Role.NATIONAL_COORDINATOR)
NATIONAL_ANALYST = principal("analyst.national", Role.ANALYST)
NATIONAL_SUP = principal("supervisor.national", Role.SUPERVISOR)
SUP_EMSOU = principal("supervisor.emsou", Role.SUPERVISOR)
ANALYST_EMSOU = principal("analyst.emsou", Role.ANALYST)
RES_LONDON = principal("researcher.london", Role.RESEARCHER)


def job_events(region: Region, n: int, taker: Region | None = None) -> list[JobFacts]:
    job = f"regions/{region.value}/jobs/{n}"
    taken = frozenset({taker}) if taker else frozenset()
    due = T0 + timedelta(days=2)
    created = [JobFacts(job, region, 1, "COMMS_ANALYSIS", "RAISED", "PRIORITY", due, created_at=T0)]
    if n % 3 == 0:  # left open, overdue by NOW
        return created
    return [
        *created,
        JobFacts(job, region, 2, "COMMS_ANALYSIS", "ASSIGNED", taken_by=taken),
        JobFacts(job, region, 3, "COMMS_ANALYSIS", "IN_PROGRESS", taken_by=taken),
        JobFacts(
            job,
            region,
            4,
            "COMMS_ANALYSIS",
            "DELIVERED",
            delivered_at=T0 + timedelta(days=1 if n % 2 else 3),
            taken_by=taken,
        ),
        JobFacts(job, region, rating=5 if n % 2 else 2, rated_at=T0 + timedelta(days=4)),
    ]


def workload() -> list[JobFacts]:
    facts: list[JobFacts] = []
    for n in range(1, 13):
        facts += job_events(Region.EMSOU, n, taker=Region.LONDON if n % 4 == 1 else None)
    for n in range(1, 7):
        facts += job_events(Region.NATIONAL, n, taker=Region.LONDON)
    return facts


async def project_all(uow: FakeOversightUnitOfWork, facts: list[JobFacts]) -> None:
    for fact in facts:
        await handlers.project_job(fact, uow)


async def test_counters_hold_the_sum_of_the_final_records_whatever_the_order() -> None:
    facts = workload()
    expected = FakeOversightUnitOfWork()
    await project_all(expected, facts)
    total = Counter[Key]()
    for record in expected.job_records():
        total.update(record.contributions())
    assert expected.counters.nonzero() == dict(total)
    rng = random.Random(5)
    for _ in range(20):
        shuffled = facts + rng.choices(facts, k=10)  # and some told twice
        rng.shuffle(shuffled)
        uow = FakeOversightUnitOfWork()
        await project_all(uow, shuffled)
        assert uow.counters.nonzero() == expected.counters.nonzero()
        assert uow.deadlines.open == expected.deadlines.open


def deps(uow: FakeOversightUnitOfWork) -> handlers.Deps:
    return handlers.Deps(reader=lambda: FakeReader(uow), clock=lambda: NOW)


def ask(actor, regions=(), first=None, last=None, force=""):  # type: ignore[no-untyped-def]
    return commands.GetOverview(actor, frozenset(regions), first, last, force)


async def test_the_overview_counts_each_regions_jobs() -> None:
    uow = FakeOversightUnitOfWork()
    await project_all(uow, workload())
    overview = await handlers.get_overview(ask(NC), deps(uow))
    assert [s.region for s in overview.regions] == list(Region)
    emsou = next(s for s in overview.regions if s.region is Region.EMSOU)
    jobs = emsou.jobs
    assert jobs.raised == 12 and jobs.states["DELIVERED"] == 8 and jobs.states["RAISED"] == 4
    assert jobs.open == 4 and jobs.overdue == 4  # due on day 2, asked on day 10
    assert (jobs.delivered_on_time, jobs.delivered_late) == (4, 4)
    # Jobs 1, 5 and 9 of EMSOU were worked by LONDON; 9 is left open (9 % 3 == 0) but was never
    # assigned, so jobs 1 and 5 only.
    assert jobs.taken_by_other_regions == 2 and jobs.taken_by == Counter({Region.LONDON: 2})
    assert jobs.rated == 8 and jobs.mean_rating == 3.5
    london = next(s for s in overview.regions if s.region is Region.LONDON)
    # LONDON's researchers took two EMSOU jobs and four of the national team's.
    assert london.jobs.raised == 0 and london.jobs.taken_for_other_regions == 6
    assert overview.total.jobs.raised == 18 and overview.total.jobs.taken_by_other_regions == 6
    assert overview.period.last == date(2026, 3, 12) and overview.period.first == date(2026, 3, 2)


async def test_the_period_chooses_jobs_by_the_day_they_were_raised() -> None:
    uow = FakeOversightUnitOfWork()
    await project_all(uow, workload())
    before = await handlers.get_overview(ask(NC, first=date(2026, 2, 1), last=date(2026, 3, 1)), deps(uow))
    assert before.total.jobs.raised == 0 and before.total.jobs.overdue == 0
    that_day = await handlers.get_overview(ask(NC, first=date(2026, 3, 2), last=date(2026, 3, 2)), deps(uow))
    assert that_day.total.jobs.raised == 18


async def test_a_period_ending_before_it_starts_is_refused() -> None:
    with pytest.raises(InvalidArgument) as refused:
        await handlers.get_overview(
            ask(NC, first=date(2026, 3, 5), last=date(2026, 3, 1)), deps(FakeOversightUnitOfWork())
        )
    assert refused.value.violations[0].field == "period.first_day"


async def test_referrals_pnd_and_deconfliction_are_counted() -> None:
    uow = FakeOversightUnitOfWork()
    r = "regions/EMSOU/referrals/r1"
    for fact in (
        ReferralFacts(r, Region.EMSOU, T0, "e1", "DRAFT", drafted=True),
        ReferralFacts(
            r, Region.EMSOU, T0 + timedelta(hours=1), "e2", "SUBMITTED", clock=ClockRecord("NRM", due_at=T0)
        ),
        ReferralFacts(
            r,
            Region.EMSOU,
            T0 + timedelta(hours=2),
            "e3",
            "SUBMITTED",
            clock=ClockRecord("CHILDRENS_SOCIAL_CARE", due_at=NOW + timedelta(days=1)),
        ),
    ):
        await handlers.project_referral(fact, uow)
    handlers.count_event(uow, Region.EMSOU, T0, Figure.PND_RESULT, "ACCEPTED")
    handlers.count_event(uow, Region.EMSOU, T0, Figure.PND_RESULT, "REJECTED")
    handlers.count_event(uow, Region.EMSOU, T0, Figure.DECONFLICTION, "LONDON")
    handlers.keep_reconciliation(uow, Reconciliation(Region.EMSOU, T0, "reconciliations/b", held=2, stale=1))
    handlers.keep_reconciliation(
        uow, Reconciliation(Region.EMSOU, T0 - timedelta(days=1), "reconciliations/a")
    )
    overview = await handlers.get_overview(ask(SUP_EMSOU), deps(uow))
    [emsou] = overview.regions
    assert emsou.referrals.drafted == 1 and emsou.referrals.states["SUBMITTED"] == 1
    assert (emsou.referrals.due, emsou.referrals.overdue) == (1, 1)
    assert (emsou.pnd.accepted, emsou.pnd.rejected) == (1, 1)
    assert emsou.pnd.reconciliation is not None and emsou.pnd.reconciliation.held == 2
    assert emsou.deconfliction.notices == 1


async def test_a_force_counts_its_jobs_only_and_says_what_it_leaves_out() -> None:
    uow = FakeOversightUnitOfWork()
    await project_all(uow, workload())
    await handlers.project_job(
        JobFacts(
            "regions/EMSOU/jobs/f1", Region.EMSOU, 1, "ANPR", "RAISED", "URGENT", NOW, T0, force="LEICS"
        ),
        uow,
    )
    handlers.count_event(uow, Region.EMSOU, T0, Figure.PND_RESULT, "ACCEPTED")
    overview = await handlers.get_overview(ask(NC, force="LEICS"), deps(uow))
    assert overview.total.jobs.raised == 1 and overview.total.pnd.accepted == 0
    assert any("name no force" in note for note in overview.notes)
    assert any("18 jobs" in note for note in overview.notes)


# --- who sees what ------------------------------------------------------------------------------


@pytest.mark.parametrize("actor", [NC, NC_EMSOU, NATIONAL_ANALYST, NATIONAL_SUP])
async def test_the_national_team_sees_every_region(actor) -> None:  # type: ignore[no-untyped-def]
    uow = FakeOversightUnitOfWork()
    await project_all(uow, workload())
    overview = await handlers.get_overview(ask(actor), deps(uow))
    assert [s.region for s in overview.regions] == list(Region)
    some = await handlers.get_overview(ask(actor, regions=[Region.LONDON, Region.EMSOU]), deps(uow))
    assert [s.region for s in some.regions] == [Region.EMSOU, Region.LONDON]


async def test_a_regional_supervisor_sees_their_own_region_only() -> None:
    uow = FakeOversightUnitOfWork()
    await project_all(uow, workload())
    overview = await handlers.get_overview(ask(SUP_EMSOU), deps(uow))
    assert [s.region for s in overview.regions] == [Region.EMSOU]
    assert overview.total.jobs.raised == 12
    assert [
        s.region for s in (await handlers.get_overview(ask(SUP_EMSOU, [Region.EMSOU]), deps(uow))).regions
    ] == [Region.EMSOU]
    with pytest.raises(PermissionDenied, match="EMSOU only"):
        await handlers.get_overview(ask(SUP_EMSOU, [Region.EMSOU, Region.LONDON]), deps(uow))


@pytest.mark.parametrize("actor", [RES_LONDON, ANALYST_EMSOU])
async def test_researchers_and_regional_analysts_are_refused(actor) -> None:  # type: ignore[no-untyped-def]
    reader = FakeReader(FakeOversightUnitOfWork())
    with pytest.raises(PermissionDenied):
        await handlers.get_overview(ask(actor), handlers.Deps(reader=lambda: reader, clock=lambda: NOW))
    assert reader.queries == []  # refused before anything is read
