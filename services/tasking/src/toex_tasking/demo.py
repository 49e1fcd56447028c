"""Demo data for the local stack: the realm's demo researchers and a handful of jobs."""

from __future__ import annotations

from datetime import timedelta

from toex_kernel.forces import Force, ThreatCategory
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

from toex_tasking.adapters.directory import StaticDirectory
from toex_tasking.config import Settings
from toex_tasking.domain import commands
from toex_tasking.domain.model import Handling, JobType, Priority
from toex_tasking.service_layer import handlers
from toex_tasking.service_layer.ports import DirectoryUser

NON_PILOT = [Region.LONDON, Region.TARIAN, Region.SE, Region.SW, Region.NE, Region.NW, Region.YH]


def demo_directory() -> StaticDirectory:
    users = [
        DirectoryUser(f"researcher.{r.token}", r, frozenset({Role.RESEARCHER}))
        for r in [Region.EMSOU, Region.ERSOU, Region.ROCUWM, *NON_PILOT]
    ]
    return StaticDirectory(users)


def _actor(username: str, role: Role, region: Region) -> Principal:
    return Principal(subject=f"demo:{username}", username=username, region=region, roles=frozenset({role}))


async def seed(deps: handlers.Deps) -> list[str]:
    """Raise a few jobs as the demo users would. Idempotent through request ids."""
    now = deps.clock()
    coordinator = _actor("national_coordinator.national", Role.NATIONAL_COORDINATOR, Region.NATIONAL)
    supervisor = _actor("supervisor.emsou", Role.SUPERVISOR, Region.EMSOU)
    specs = [
        (
            coordinator,
            Region.EMSOU,
            "Op SANDPIPER",
            JobType.COMMS_ANALYSIS,
            Priority.URGENT,
            "Phone number index and contact analysis for ~40 persons of interest",
            "Derbyshire Constabulary",
            Force.DERBYSHIRE,
            ThreatCategory.CSE,
        ),
        (
            supervisor,
            Region.EMSOU,
            "Op SANDPIPER",
            JobType.ANPR,
            Priority.PRIORITY,
            "ANPR reads and patterns of travel for vehicles linked to suspects",
            "Derbyshire Constabulary",
            Force.DERBYSHIRE,
            ThreatCategory.CSE,
        ),
        (
            coordinator,
            Region.ERSOU,
            "Op KESTREL",
            JobType.OPEN_SOURCE,
            Priority.ROUTINE,
            "Adult-services adverts: numbers and any organised network behind them",
            "Essex Police",
            Force.ESSEX,
            ThreatCategory.MODERN_SLAVERY_SEXUAL,
        ),
    ]
    names = []
    for index, spec in enumerate(specs):
        actor, region, operation, job_type, priority, description, unit, force, threat = spec
        job = await handlers.create_job(
            commands.CreateJob(
                actor=actor,
                region=region,
                requesting_unit=unit,
                requesting_officer="DS Demo",
                operation_name=operation,
                job_type=job_type,
                priority=priority,
                due_at=now + timedelta(days=7 + index),
                description=description,
                handling=Handling.C,
                idempotency=commands.Idempotency(f"demo-seed-{index}", "demo"),
                requesting_force=force,
                threat_category=threat,
            ),
            deps,
        )
        names.append(job.name)
    return names


async def seed_demo(settings: Settings) -> list[str]:
    """`seed-demo`: the demo jobs, raised through the service's own handlers and database."""
    from toex_common.db import create_engine

    from toex_tasking.adapters.uow import PgTaskingUnitOfWork

    engine = create_engine(settings.database_url, pool_size=2)
    try:
        deps = handlers.Deps(uow=lambda: PgTaskingUnitOfWork(engine), directory=demo_directory())  # type: ignore[arg-type,return-value]
        return [f"demo job {name}" for name in await seed(deps)]
    finally:
        await engine.dispose()
