from datetime import UTC, datetime, timedelta

import pytest
from toex.tasking.events.v2 import events_pb2
from toex_common.testing.fakes import principal
from toex_kernel.errors import InvalidArgument, NotFound, OutOfScope, PermissionDenied
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_tasking.demo import demo_directory
from toex_tasking.domain import commands
from toex_tasking.domain.model import Handling, JobState, JobType, Priority
from toex_tasking.service_layer import handlers

from .fakes import FakeTaskingUnitOfWork

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
SUP_EMSOU = principal("supervisor.emsou", Role.SUPERVISOR)
SUP_ERSOU = principal("supervisor.ersou", Role.SUPERVISOR)
RES_EMSOU = principal("researcher.emsou", Role.RESEARCHER)
RES_ERSOU = principal("researcher.ersou", Role.RESEARCHER)
RES_LONDON = principal("researcher.london", Role.RESEARCHER)
SAFE_EMSOU = principal("safeguarding_officer.emsou", Role.SAFEGUARDING_OFFICER)


@pytest.fixture
def uow() -> FakeTaskingUnitOfWork:
    return FakeTaskingUnitOfWork()


@pytest.fixture
def deps(uow: FakeTaskingUnitOfWork) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, directory=demo_directory(), clock=lambda: NOW)  # type: ignore[arg-type,return-value]


def create(actor=NC, region=Region.EMSOU, request_id: str | None = None, **overrides) -> commands.CreateJob:
    fields = dict(
        actor=actor,
        region=region,
        requesting_unit="Leicestershire Police",
        requesting_officer="DS A",
        operation_name="Op X",
        job_type=JobType.COMMS_ANALYSIS,
        priority=Priority.ROUTINE,
        due_at=NOW + timedelta(days=5),
        description="",
        handling=Handling.P,
        idempotency=commands.Idempotency(request_id, "fp") if request_id else None,
    )
    fields.update(overrides)
    return commands.CreateJob(**fields)  # type: ignore[arg-type]


def event_types(uow: FakeTaskingUnitOfWork) -> list[str]:
    return [e.event_type.rsplit(".", 1)[-1] for e in uow.committed_events]


async def test_create_publishes_job_created_on_the_region_subject(deps, uow) -> None:
    job = await handlers.create_job(create(), deps)
    [event] = uow.committed_events
    assert event.subject == "toex.emsou.tasking.JobCreated"
    message = events_pb2.JobCreated.FromString(event.payload)
    assert message.job == job.name and message.access.revision == 1
    assert event.headers["toex-handling"] == "P"


async def test_create_validates_every_field_at_once(deps) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await handlers.create_job(
            create(requesting_unit=" ", operation_name="", due_at=NOW - timedelta(days=1)), deps
        )
    fields = {v.field for v in caught.value.violations}
    assert fields == {"job.requesting_unit", "job.operation_name", "job.due_time"}


async def test_supervisor_creates_only_in_own_region(deps) -> None:
    await handlers.create_job(create(actor=SUP_EMSOU), deps)
    with pytest.raises(PermissionDenied):
        await handlers.create_job(create(actor=SUP_EMSOU, region=Region.ERSOU), deps)


async def test_repeated_request_id_returns_the_first_job_and_one_event(deps, uow) -> None:
    first = await handlers.create_job(create(request_id="r-1"), deps)
    again = await handlers.create_job(create(request_id="r-1"), deps)
    assert again.id == first.id
    assert event_types(uow) == ["JobCreated"]
    with pytest.raises(InvalidArgument, match="request_id"):
        await handlers.create_job(
            commands.CreateJob(
                **{**create(request_id="r-1").__dict__, "idempotency": commands.Idempotency("r-1", "other")}
            ),
            deps,
        )


async def test_scope_of_reads(deps) -> None:
    job = await handlers.create_job(create(), deps)
    for actor in (NC, SUP_EMSOU, RES_EMSOU):
        assert (await handlers.get_job(commands.GetJob(actor, Region.EMSOU, job.id), deps)).id == job.id
    for actor in (SUP_ERSOU, RES_ERSOU, RES_LONDON):
        with pytest.raises(OutOfScope):
            await handlers.get_job(commands.GetJob(actor, Region.EMSOU, job.id), deps)
    with pytest.raises(NotFound) as caught:
        await handlers.get_job(commands.GetJob(RES_EMSOU, Region.EMSOU, "doesnotexist"), deps)
    assert not isinstance(caught.value, OutOfScope)
    # the right id under the wrong region is not the job
    with pytest.raises(NotFound):
        await handlers.get_job(commands.GetJob(NC, Region.ERSOU, job.id), deps)


async def test_reassigned_researcher_of_another_region_sees_and_works_the_job(deps, uow) -> None:
    job = await handlers.create_job(create(), deps)
    await handlers.assign_job(commands.AssignJob(SUP_EMSOU, Region.EMSOU, job.id, ["researcher.emsou"]), deps)
    await handlers.reassign_job(
        commands.ReassignJob(SUP_EMSOU, Region.EMSOU, job.id, "researcher.london", "resilience"), deps
    )
    seen = await handlers.get_job(commands.GetJob(RES_LONDON, Region.EMSOU, job.id), deps)
    assert seen.region is Region.EMSOU
    await handlers.update_job_status(
        commands.UpdateJobStatus(RES_LONDON, Region.EMSOU, job.id, JobState.IN_PROGRESS, "", ""), deps
    )
    page, more = await handlers.list_jobs(
        commands.ListJobs(RES_LONDON, None, frozenset(), "", None, 10, None), deps
    )
    assert [j.id for j in page] == [job.id] and not more
    assert event_types(uow) == [
        "JobCreated",
        "JobAssigned",
        "JobStatusChanged",
        "JobReassigned",
        "JobStatusChanged",
    ]


async def test_assign_checks_the_directory(deps) -> None:
    job = await handlers.create_job(create(), deps)
    with pytest.raises(InvalidArgument) as caught:
        await handlers.assign_job(
            commands.AssignJob(SUP_EMSOU, Region.EMSOU, job.id, ["researcher.london", "nobody"]), deps
        )
    assert [v.field for v in caught.value.violations] == ["assignees[0]", "assignees[1]"]
    with pytest.raises(OutOfScope):
        await handlers.assign_job(
            commands.AssignJob(SUP_ERSOU, Region.EMSOU, job.id, ["researcher.ersou"]), deps
        )


async def test_researcher_may_not_cancel_or_close(deps) -> None:
    job = await handlers.create_job(create(), deps)
    with pytest.raises(PermissionDenied):
        await handlers.update_job_status(
            commands.UpdateJobStatus(RES_EMSOU, Region.EMSOU, job.id, JobState.CANCELLED, "no", ""), deps
        )


async def test_list_is_scoped_and_paged(deps) -> None:
    emsou = [await handlers.create_job(create(), deps) for _ in range(3)]
    await handlers.create_job(create(region=Region.ERSOU), deps)
    for i, job in enumerate(emsou):  # distinct creation times for a stable order
        job.created_at = NOW + timedelta(seconds=i)
    page, more = await handlers.list_jobs(
        commands.ListJobs(SUP_EMSOU, None, frozenset(), "", None, 2, None), deps
    )
    assert len(page) == 2 and more
    assert all(j.region is Region.EMSOU for j in page)
    everything, _ = await handlers.list_jobs(
        commands.ListJobs(NC, None, frozenset(), "", None, 50, None), deps
    )
    assert len(everything) == 4
    # Another region's jobs: none, unless the supervisor's region collaborates on them.
    ersou, _ = await handlers.list_jobs(
        commands.ListJobs(SUP_EMSOU, Region.ERSOU, frozenset(), "", None, 50, None), deps
    )
    assert ersou == []
    with pytest.raises(PermissionDenied):
        await handlers.list_jobs(
            commands.ListJobs(SAFE_EMSOU, Region.ERSOU, frozenset(), "", None, 50, None), deps
        )


async def test_capacity_counts_open_work_and_idle_researchers(deps) -> None:
    job = await handlers.create_job(create(), deps)
    await handlers.create_job(create(), deps)
    await handlers.assign_job(commands.AssignJob(SUP_EMSOU, Region.EMSOU, job.id, ["researcher.emsou"]), deps)
    counts, unassigned, open_jobs = await handlers.get_region_capacity(
        commands.GetRegionCapacity(SUP_EMSOU, Region.EMSOU), deps
    )
    assert [(c.username, c.open_jobs) for c in counts] == [("researcher.emsou", 1)]
    assert (unassigned, open_jobs) == (1, 2)
    with pytest.raises(PermissionDenied):
        await handlers.get_region_capacity(commands.GetRegionCapacity(SUP_EMSOU, Region.ERSOU), deps)


async def test_overdue_scan_publishes_once(deps, uow) -> None:
    await handlers.create_job(create(), deps)
    later = NOW + timedelta(days=6)
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(later), deps) == 1
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(later), deps) == 0
    assert event_types(uow).count("JobOverdue") == 1
