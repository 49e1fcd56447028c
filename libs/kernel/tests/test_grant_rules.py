"""The grant rules: the purpose names the job, the material is the job's, the caller holds it."""

from __future__ import annotations

from toex_kernel.grants import JobGrant, covered, covered_for_reading, job_of_purpose
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

LONDON = Principal("s-1", "researcher.london", Region.LONDON, frozenset({Role.RESEARCHER}))
JOB = "regions/EMSOU/jobs/abc123"


def test_a_purpose_names_a_job_in_either_spelling_or_none() -> None:
    assert job_of_purpose("regions/EMSOU/jobs/abc123") == JOB
    assert job_of_purpose(" EMSOU/abc123 ") == JOB
    assert job_of_purpose("emsou/abc123") == JOB
    assert job_of_purpose("Op Kestrel") is None
    assert job_of_purpose("NOWHERE/abc") is None
    assert job_of_purpose("regions/EMSOU/datasets/abc") is None


def test_a_grant_covers_the_jobs_material_for_its_holders_while_open() -> None:
    grant = JobGrant(JOB, Region.EMSOU, frozenset({"researcher.london"}), open=True)
    assert covered(grant, LONDON, Region.EMSOU, JOB)
    # the region's other material, another region, another job, no job: never
    assert not covered(grant, LONDON, Region.EMSOU, "regions/EMSOU/jobs/other")
    assert not covered(grant, LONDON, Region.EMSOU, "")
    assert not covered(grant, LONDON, Region.ERSOU, JOB)
    # someone else, a closed job, no grant: never
    other = Principal("s-2", "researcher.ersou", Region.ERSOU, frozenset({Role.RESEARCHER}))
    assert not covered(grant, other, Region.EMSOU, JOB)
    assert not covered(
        JobGrant(JOB, Region.EMSOU, frozenset({"researcher.london"}), open=False), LONDON, Region.EMSOU, JOB
    )
    assert not covered(None, LONDON, Region.EMSOU, JOB)


def test_a_collaborating_regions_supervisor_reads_the_jobs_material_and_changes_nothing() -> None:
    grant = JobGrant(JOB, Region.EMSOU, frozenset({"researcher.london"}), True, frozenset({Region.ERSOU}))
    supervisor = Principal("s-3", "supervisor.ersou", Region.ERSOU, frozenset({Role.SUPERVISOR}))
    researcher = Principal("s-4", "researcher.ersou", Region.ERSOU, frozenset({Role.RESEARCHER}))
    elsewhere = Principal("s-5", "supervisor.london", Region.LONDON, frozenset({Role.SUPERVISOR}))
    assert covered_for_reading(grant, supervisor, Region.EMSOU, JOB)
    assert not covered(grant, supervisor, Region.EMSOU, JOB)
    # not a supervisor, not a collaborating region, not the job's material, a closed job: no
    assert not covered_for_reading(grant, researcher, Region.EMSOU, JOB)
    assert not covered_for_reading(grant, elsewhere, Region.EMSOU, JOB)
    assert not covered_for_reading(grant, supervisor, Region.EMSOU, "regions/EMSOU/jobs/other")
    closed = JobGrant(JOB, Region.EMSOU, frozenset(), False, frozenset({Region.ERSOU}))
    assert not covered_for_reading(closed, supervisor, Region.EMSOU, JOB)
    # holders read as they work
    assert covered_for_reading(grant, LONDON, Region.EMSOU, JOB)
