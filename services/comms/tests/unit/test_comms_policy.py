from __future__ import annotations

import pytest
from toex_comms.domain import policy
from toex_kernel.errors import OutOfScope
from toex_kernel.grants import JobGrant
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region


def who(region: Region, *roles: Role) -> Principal:
    return Principal("s", "u", region, frozenset(roles))


def test_region_staff_see_their_own_region_only() -> None:
    analyst = who(Region.EMSOU, Role.ANALYST)
    assert policy.can_see(analyst, Region.EMSOU) and policy.can_change(analyst, Region.EMSOU)
    assert not policy.can_see(analyst, Region.ERSOU)
    with pytest.raises(OutOfScope):
        policy.ensure_visible(analyst, Region.ERSOU, "x")
    assert policy.visible_regions(analyst, None) == [Region.EMSOU]


def test_coordinator_everywhere_service_reads_only_others_nothing() -> None:
    assert policy.can_change(who(Region.NATIONAL, Role.NATIONAL_COORDINATOR), Region.SW)
    service = who(Region.NATIONAL, Role.SERVICE)
    assert policy.can_see(service, Region.SW) and not policy.can_change(service, Region.SW)
    assert not policy.can_see(who(Region.EMSOU, Role.SAFEGUARDING_OFFICER), Region.EMSOU)
    assert policy.visible_regions(service, None) is None


JOB = "regions/EMSOU/jobs/j1"


def grant(*holders: str, open: bool = True, job: str = JOB) -> JobGrant:
    return JobGrant(job, Region.parse(job.split("/")[1]), frozenset(holders), open)


def test_a_job_grant_reaches_the_jobs_material_of_its_region_only() -> None:
    london = Principal("s", "researcher.london", Region.LONDON, frozenset({Role.RESEARCHER}))
    reach = policy.reach(london, Region.EMSOU, grant("researcher.london"), "x")
    assert reach == policy.Reach(Region.EMSOU, JOB) and reach.under_grant
    assert reach.admits(JOB) and not reach.admits("regions/EMSOU/jobs/other") and not reach.admits("")
    assert policy.reach(london, Region.EMSOU, grant("researcher.london"), "x", change=True).job == JOB
    refused = [
        (london, Region.EMSOU, grant("researcher.london", open=False)),
        (london, Region.EMSOU, grant("researcher.ersou")),
        (london, Region.EMSOU, None),
        (london, Region.ERSOU, grant("researcher.london")),
        # The job of the grant must be of the material's region.
        (london, Region.EMSOU, grant("researcher.london", job="regions/ERSOU/jobs/j1")),
        # A grant gives no role: a service account of another region named as a holder reaches nothing.
        (
            Principal("s", "researcher.london", Region.LONDON, frozenset({Role.SERVICE})),
            Region.EMSOU,
            grant("researcher.london"),
        ),
    ]
    for who, region, found in refused:
        with pytest.raises(OutOfScope):
            policy.reach(who, region, found, "x")


def test_those_who_see_the_region_reach_all_of_it_and_need_no_grant() -> None:
    analyst = who(Region.EMSOU, Role.ANALYST)
    coordinator = who(Region.NATIONAL, Role.NATIONAL_COORDINATOR)
    hub = who(Region.NATIONAL, Role.SERVICE)
    for principal in (analyst, coordinator, hub):
        assert not policy.needs_grant(principal, Region.EMSOU)
        assert policy.reach(principal, Region.EMSOU, None, "x") == policy.Reach(Region.EMSOU)
    # The hub's service identity reads every region, and changes none, with or without grants.
    assert policy.needs_grant(hub, Region.EMSOU, change=True)
    with pytest.raises(OutOfScope):
        policy.reach(hub, Region.EMSOU, None, "x", change=True)


def test_a_collaborating_regions_supervisor_reads_the_jobs_material_and_changes_nothing() -> None:
    collaborating = JobGrant(
        JOB, Region.EMSOU, frozenset({"researcher.london"}), True, frozenset({Region.ERSOU})
    )
    supervisor = Principal("s", "supervisor.ersou", Region.ERSOU, frozenset({Role.SUPERVISOR}))
    assert policy.reach(supervisor, Region.EMSOU, collaborating, "x") == policy.Reach(Region.EMSOU, JOB)
    with pytest.raises(OutOfScope):
        policy.reach(supervisor, Region.EMSOU, collaborating, "x", change=True)
    # an analyst of the collaborating region, or a supervisor of a region not named: nothing
    for other in (
        Principal("s", "analyst.ersou", Region.ERSOU, frozenset({Role.ANALYST})),
        Principal("s", "supervisor.sw", Region.SW, frozenset({Role.SUPERVISOR})),
    ):
        with pytest.raises(OutOfScope):
            policy.reach(other, Region.EMSOU, collaborating, "x")
