"""Job grants: a job is a compartment.

Assigning a job to a researcher of another region lets them work the material attached to that
job in every service, under the job: stored and labelled in the job's region, reached with the
job as the call's purpose, audited as such, and nothing else of that region. The grant ends when
the job is closed, cancelled or declined, or they are taken off it. Each service keeps the grants
it needs as a read model of tasking's events (toex_common.grants); the rules are here, pure.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

# `regions/EMSOU/jobs/<id>`, or `EMSOU/<id>` as the CLI writes a job.
_JOB = re.compile(r"^(?:regions/)?([A-Za-z]{2,16})/(?:jobs/)?([A-Za-z0-9_-]{1,64})$")


def job_of_purpose(purpose: str) -> str | None:
    """The job a call's purpose names (`regions/<REGION>/jobs/<id>`), or None when the purpose
    is not a job (an operation name, say)."""
    found = _JOB.match(purpose.strip())
    if found is None:
        return None
    try:
        region = Region.parse(found.group(1))
    except ValueError:
        return None
    return f"regions/{region.value}/jobs/{found.group(2)}"


def is_job_of(job: str, region: Region) -> bool:
    """Whether `job` is a job of `region` (`regions/<REGION>/jobs/<id>`): the only job a region's
    material may be attached to, and the only one an event on the region's subject may name."""
    return job.startswith(f"regions/{region.value}/jobs/")


def job_of(purpose: str, region: Region) -> str:
    """The job of `region` the call's purpose names, "" if it names none: what material made in
    the call is attached to, and the only grant that can reach the region's material in it."""
    job = job_of_purpose(purpose) or ""
    return job if is_job_of(job, region) else ""


@dataclass(frozen=True)
class JobGrant:
    """Who may work a job now (its assignees), while it is open; and which regions collaborate
    on it (their supervisors read the job's material, and change nothing)."""

    job: str
    region: Region
    holders: frozenset[str]
    open: bool
    collaborators: frozenset[Region] = frozenset()

    def admits(self, principal: Principal) -> bool:
        return self.open and principal.username in self.holders

    def admits_reader(self, principal: Principal) -> bool:
        """A holder, or a supervisor of a collaborating region, while the job is open."""
        if self.admits(principal):
            return True
        return self.open and principal.region in self.collaborators and principal.has(Role.SUPERVISOR)

    def covers(self, principal: Principal, region: Region, material_job: str) -> bool:
        """Whether `principal` may work material of `region` attached to `material_job` under
        this grant: the material is the job's, in the job's region, and they hold the job."""
        return self.region is region and material_job == self.job and self.admits(principal)

    def covers_reading(self, principal: Principal, region: Region, material_job: str) -> bool:
        """Whether `principal` may read (only) that material: a holder, or a collaborating
        region's supervisor."""
        return self.region is region and material_job == self.job and self.admits_reader(principal)


def covered(grant: JobGrant | None, principal: Principal, region: Region, material_job: str) -> bool:
    """May work (read and change) the job's material under the grant."""
    return grant is not None and bool(material_job) and grant.covers(principal, region, material_job)


def covered_for_reading(
    grant: JobGrant | None, principal: Principal, region: Region, material_job: str
) -> bool:
    """May read the job's material under the grant (collaborating supervisors included)."""
    return grant is not None and bool(material_job) and grant.covers_reading(principal, region, material_job)


class GrantReader(Protocol):
    """The port a service's handlers read grants through, in the unit of work's transaction
    (`uow.grants`: toex_common.grants.SqlGrants, or FakeGrants in unit tests)."""

    async def of_job(self, job: str) -> JobGrant | None: ...

    async def for_purpose(self, purpose: str) -> JobGrant | None:
        """The grant of the job the call's purpose names; None when it names none or one unknown."""
        ...
