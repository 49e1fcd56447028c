"""Tasking the way the national team does it: a coordinator assigns any region's researcher,
collaborating regions' supervisors see a job read-only, and UpdateJob changes an open job."""

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import field_mask_pb2
from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.events.v2 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import region_pb2
from toex_common.testing.fakes import principal
from toex_kernel.errors import FailedPrecondition, InvalidArgument, OutOfScope, PermissionDenied
from toex_kernel.idempotency import Idempotency
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_tasking.demo import demo_directory
from toex_tasking.domain import commands
from toex_tasking.domain.model import Handling, JobChanges, JobState, JobType, Priority
from toex_tasking.entrypoints.grpc_api import job_changes
from toex_tasking.service_layer import handlers

from .fakes import FakeTaskingUnitOfWork

START = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
NC = principal("national_coordinator.national", Role.NATIONAL_COORDINATOR)
SUP_EMSOU = principal("supervisor.emsou", Role.SUPERVISOR)
SUP_ERSOU = principal("supervisor.ersou", Role.SUPERVISOR)
SUP_ROCUWM = principal("supervisor.rocuwm", Role.SUPERVISOR)
RES_EMSOU = principal("researcher.emsou", Role.RESEARCHER)
RES_ERSOU = principal("researcher.ersou", Role.RESEARCHER)
RES_LONDON = principal("researcher.london", Role.RESEARCHER)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def uow() -> FakeTaskingUnitOfWork:
    return FakeTaskingUnitOfWork()


@pytest.fixture
def deps(uow: FakeTaskingUnitOfWork, clock: Clock) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, directory=demo_directory(), clock=clock)  # type: ignore[arg-type,return-value]


async def raise_job(deps: handlers.Deps, *, actor=NC, collaborating: list[Region] | None = None):  # type: ignore[no-untyped-def]
    return await handlers.create_job(
        commands.CreateJob(
            actor=actor,
            region=Region.EMSOU,
            requesting_unit="Derbyshire Constabulary",
            requesting_officer="DS A",
            operation_name="Op SANDPIPER",
            job_type=JobType.COMMS_ANALYSIS,
            priority=Priority.ROUTINE,
            due_at=START + timedelta(days=5),
            description="Phone index",
            handling=Handling.C,
            collaborating_regions=collaborating or [],
        ),
        deps,
    )


def update(actor, job_id: str, request_id: str | None = None, fingerprint: str = "fp", **changes):  # type: ignore[no-untyped-def]
    idempotency = Idempotency(request_id, fingerprint) if request_id else None
    return commands.UpdateJob(actor, Region.EMSOU, job_id, JobChanges(**changes), idempotency)


def published(uow: FakeTaskingUnitOfWork, kind: str) -> list:  # type: ignore[type-arg]
    message_type = getattr(events_pb2, kind)
    return [
        message_type.FromString(e.payload)
        for e in uow.committed_events
        if e.event_type == f"toex.tasking.events.v2.{kind}"
    ]


# --- AssignJob across regions ------------------------------------------------------------------


async def test_coordinator_assigns_a_raised_job_straight_to_another_regions_researcher(deps, uow) -> None:
    job = await raise_job(deps)
    assigned = await handlers.assign_job(
        commands.AssignJob(NC, Region.EMSOU, job.id, ["researcher.london", "researcher.emsou"]), deps
    )
    assert assigned.state is JobState.ASSIGNED and assigned.region is Region.EMSOU
    assert [(a.username, a.region) for a in assigned.assignees] == [
        ("researcher.london", Region.LONDON),
        ("researcher.emsou", Region.EMSOU),
    ]
    [event] = published(uow, "JobAssigned")
    assert [a.username for a in event.access.assignees] == ["researcher.london", "researcher.emsou"]
    assert event.access.assignees[0].region == region_pb2.REGION_LONDON
    # The London researcher now sees and works the EMSOU job.
    seen = await handlers.get_job(commands.GetJob(RES_LONDON, Region.EMSOU, job.id), deps)
    assert seen.id == job.id
    await handlers.update_job_status(
        commands.UpdateJobStatus(RES_LONDON, Region.EMSOU, job.id, JobState.IN_PROGRESS, "", ""), deps
    )


async def test_coordinator_still_assigns_researchers_only(deps) -> None:
    job = await raise_job(deps)
    with pytest.raises(InvalidArgument) as caught:
        await handlers.assign_job(commands.AssignJob(NC, Region.EMSOU, job.id, ["nobody.at.all"]), deps)
    assert [v.field for v in caught.value.violations] == ["assignees[0]"]


async def test_supervisor_may_not_assign_another_regions_researcher(deps, uow) -> None:
    job = await raise_job(deps, actor=SUP_EMSOU)
    answers = []
    for probe in ("researcher.london", "nobody.at.all"):
        with pytest.raises(InvalidArgument) as caught:
            await handlers.assign_job(commands.AssignJob(SUP_EMSOU, Region.EMSOU, job.id, [probe]), deps)
        answers.append(str(caught.value).replace(probe, "NAME"))
        assert "ReassignJob" in str(caught.value)
    # Another region's researcher answers as no one does: the supervisor learns nothing.
    assert answers[0] == answers[1]
    assert published(uow, "JobAssigned") == []


# --- Collaborating regions ---------------------------------------------------------------------


async def test_created_with_collaborating_regions_they_travel_in_the_access(deps, uow) -> None:
    job = await raise_job(deps, collaborating=[Region.LONDON, Region.ERSOU, Region.ERSOU])
    assert job.collaborating_regions == [Region.ERSOU, Region.LONDON]
    [event] = published(uow, "JobCreated")
    assert list(event.access.collaborating_regions) == [region_pb2.REGION_ERSOU, region_pb2.REGION_LONDON]


async def test_the_owning_region_cannot_collaborate_on_its_own_job(deps, uow) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await raise_job(deps, collaborating=[Region.ERSOU, Region.EMSOU])
    assert [v.field for v in caught.value.violations] == ["job.collaborating_regions"]
    assert uow.committed_events == []


async def test_collaborating_supervisor_sees_the_job(deps) -> None:
    job = await raise_job(deps, collaborating=[Region.ERSOU])
    seen = await handlers.get_job(commands.GetJob(SUP_ERSOU, Region.EMSOU, job.id), deps)
    assert seen.id == job.id
    for requested in (None, Region.EMSOU):
        page, _ = await handlers.list_jobs(
            commands.ListJobs(SUP_ERSOU, requested, frozenset(), "", None, 50, None), deps
        )
        assert [j.id for j in page] == [job.id]
    # Listing their own region lists their region's jobs, not the ones they collaborate on.
    own, _ = await handlers.list_jobs(
        commands.ListJobs(SUP_ERSOU, Region.ERSOU, frozenset(), "", None, 50, None), deps
    )
    assert own == []


async def test_a_region_not_collaborating_sees_nothing(deps) -> None:
    job = await raise_job(deps, collaborating=[Region.ERSOU])
    # Another region's supervisor, and the collaborating region's researcher: the job is missing.
    for actor in (SUP_ROCUWM, RES_ERSOU):
        with pytest.raises(OutOfScope):
            await handlers.get_job(commands.GetJob(actor, Region.EMSOU, job.id), deps)
        page, _ = await handlers.list_jobs(
            commands.ListJobs(actor, None, frozenset(), "", None, 50, None), deps
        )
        assert job.id not in [j.id for j in page]
    with pytest.raises(OutOfScope):
        await handlers.update_job(update(SUP_ROCUWM, job.id, description="x"), deps)


async def test_collaborating_supervisor_cannot_change_the_job(deps, uow) -> None:
    job = await raise_job(deps, collaborating=[Region.ERSOU])
    await handlers.assign_job(commands.AssignJob(NC, Region.EMSOU, job.id, ["researcher.emsou"]), deps)
    before = len(uow.committed_events)
    attempts = {
        "UpdateJob": lambda: handlers.update_job(update(SUP_ERSOU, job.id, description="changed"), deps),
        "AssignJob": lambda: handlers.assign_job(
            commands.AssignJob(SUP_ERSOU, Region.EMSOU, job.id, ["researcher.ersou"]), deps
        ),
        "ReassignJob": lambda: handlers.reassign_job(
            commands.ReassignJob(SUP_ERSOU, Region.EMSOU, job.id, "researcher.ersou", "ours now"), deps
        ),
        "UpdateJobStatus": lambda: handlers.update_job_status(
            commands.UpdateJobStatus(SUP_ERSOU, Region.EMSOU, job.id, JobState.CANCELLED, "no", ""), deps
        ),
        "AddJobNote": lambda: handlers.add_job_note(
            commands.AddJobNote(SUP_ERSOU, Region.EMSOU, job.id, "a note"), deps
        ),
        "RecordFeedback": lambda: handlers.record_feedback(
            commands.RecordFeedback(SUP_ERSOU, Region.EMSOU, job.id, 5, "good"), deps
        ),
    }
    for method, attempt in attempts.items():
        with pytest.raises(PermissionDenied, match="read-only"):
            print(method)  # shown with a failure
            await attempt()
    assert len(uow.committed_events) == before
    stored = await handlers.get_job(commands.GetJob(NC, Region.EMSOU, job.id), deps)
    assert stored.description == "Phone index" and stored.notes == []
    assert [a.username for a in stored.assignees] == ["researcher.emsou"]


async def test_removing_a_collaborating_region_ends_its_view(deps, uow) -> None:
    job = await raise_job(deps, collaborating=[Region.ERSOU, Region.ROCUWM])
    await handlers.update_job(update(SUP_EMSOU, job.id, collaborating_regions=[Region.ROCUWM]), deps)
    with pytest.raises(OutOfScope):
        await handlers.get_job(commands.GetJob(SUP_ERSOU, Region.EMSOU, job.id), deps)
    assert (await handlers.get_job(commands.GetJob(SUP_ROCUWM, Region.EMSOU, job.id), deps)).id == job.id
    [event] = published(uow, "JobUpdated")
    assert list(event.changed_fields) == ["collaborating_regions"]
    assert list(event.access.collaborating_regions) == [region_pb2.REGION_ROCUWM]


# --- UpdateJob ---------------------------------------------------------------------------------


async def test_update_changes_the_fields_and_publishes_job_updated(deps, uow, clock) -> None:
    job = await raise_job(deps)
    clock.now = START + timedelta(hours=1)
    new_due = START + timedelta(days=9)
    updated = await handlers.update_job(
        update(
            SUP_EMSOU,
            job.id,
            due_at=new_due,
            priority=Priority.URGENT,
            subject_entity_ids=[" e1 ", "e2", "e1", ""],
            description="  Phone index and comms analysis  ",
            collaborating_regions=[Region.LONDON],
        ),
        deps,
    )
    assert (updated.due_at, updated.priority) == (new_due, Priority.URGENT)
    assert updated.subject_entity_ids == ["e1", "e2"]
    assert updated.description == "Phone index and comms analysis"
    assert updated.collaborating_regions == [Region.LONDON]
    assert updated.updated_at == clock.now
    stored = await handlers.get_job(commands.GetJob(NC, Region.EMSOU, job.id), deps)
    assert stored.priority is Priority.URGENT and stored.due_at == new_due
    [event] = published(uow, "JobUpdated")
    assert list(event.changed_fields) == [
        "due_time",
        "priority",
        "subject_entity_ids",
        "description",
        "collaborating_regions",
    ]
    assert event.updated_by == "supervisor.emsou" and event.job == job.name
    assert event.access.revision == 2 and event.access.state == events_pb2.JOB_STATE_RAISED
    # The values counted at the hub, ordered by the revision (national oversight).
    assert event.priority == events_pb2.PRIORITY_URGENT
    assert event.due_time.ToDatetime(tzinfo=UTC) == new_due
    assert list(event.access.collaborating_regions) == [region_pb2.REGION_LONDON]
    [envelope] = [e for e in uow.committed_events if e.event_type.endswith("JobUpdated")]
    assert envelope.subject == "toex.emsou.tasking.JobUpdated"
    assert envelope.headers["toex-handling"] == "C"


async def test_update_names_only_what_changed_and_nothing_changed_publishes_nothing(deps, uow) -> None:
    job = await raise_job(deps)
    await handlers.update_job(update(NC, job.id, priority=Priority.ROUTINE, description="Phone index"), deps)
    assert published(uow, "JobUpdated") == []
    await handlers.update_job(update(NC, job.id, priority=Priority.PRIORITY, description="Phone index"), deps)
    [event] = published(uow, "JobUpdated")
    assert list(event.changed_fields) == ["priority"] and event.updated_by == NC.username


async def test_update_is_for_the_owning_supervisor_or_a_coordinator(deps) -> None:
    job = await raise_job(deps)
    await handlers.update_job(update(SUP_EMSOU, job.id, description="by the supervisor"), deps)
    await handlers.update_job(update(NC, job.id, description="by the coordinator"), deps)
    with pytest.raises(PermissionDenied):
        await handlers.update_job(update(RES_EMSOU, job.id, description="by a researcher"), deps)
    with pytest.raises(OutOfScope):
        await handlers.update_job(update(SUP_ERSOU, job.id, description="by another region"), deps)


async def test_only_an_open_job_is_updated(deps) -> None:
    job = await raise_job(deps)
    await handlers.update_job_status(
        commands.UpdateJobStatus(NC, Region.EMSOU, job.id, JobState.CANCELLED, "withdrawn", ""), deps
    )
    with pytest.raises(FailedPrecondition, match="CANCELLED"):
        await handlers.update_job(update(NC, job.id, description="too late"), deps)


async def test_update_validates_every_value_at_once(deps, clock) -> None:
    job = await raise_job(deps)
    with pytest.raises(InvalidArgument) as caught:
        await handlers.update_job(
            update(
                NC,
                job.id,
                due_at=clock.now - timedelta(minutes=1),
                description="x" * (handlers.MAX_TEXT + 1),
                collaborating_regions=[Region.EMSOU],
            ),
            deps,
        )
    assert {v.field for v in caught.value.violations} == {
        "job.due_time",
        "job.description",
        "job.collaborating_regions",
    }


async def test_repeated_update_request_is_answered_once(deps, uow) -> None:
    job = await raise_job(deps)
    first = await handlers.update_job(update(NC, job.id, "u-1", priority=Priority.URGENT), deps)
    again = await handlers.update_job(update(NC, job.id, "u-1", priority=Priority.URGENT), deps)
    assert again.revision == first.revision
    assert len(published(uow, "JobUpdated")) == 1
    with pytest.raises(InvalidArgument, match="request_id"):
        await handlers.update_job(update(NC, job.id, "u-1", "other", priority=Priority.ROUTINE), deps)


async def test_a_new_due_time_re_arms_the_overdue_notice(deps, uow, clock) -> None:
    job = await raise_job(deps)  # due START + 5 days
    late = START + timedelta(days=6)
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(late), deps) == 1
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(late), deps) == 0
    clock.now = late
    extended = START + timedelta(days=10)
    updated = await handlers.update_job(update(SUP_EMSOU, job.id, due_at=extended), deps)
    assert updated.overdue_notified_for is None and not updated.is_overdue(late)
    # Before the new due time: nothing; after it: JobOverdue again, for the new due time.
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(START + timedelta(days=9)), deps) == 0
    after = START + timedelta(days=11)
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(after), deps) == 1
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(after), deps) == 0
    notices = published(uow, "JobOverdue")
    assert [n.due_time.ToDatetime(tzinfo=UTC) for n in notices] == [START + timedelta(days=5), extended]


async def test_changing_something_else_does_not_re_arm_the_overdue_notice(deps, clock) -> None:
    job = await raise_job(deps)
    late = START + timedelta(days=6)
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(late), deps) == 1
    clock.now = late
    await handlers.update_job(update(SUP_EMSOU, job.id, priority=Priority.URGENT), deps)
    assert await handlers.mark_overdue_jobs(commands.MarkOverdueJobs(late + timedelta(hours=1)), deps) == 0


# --- The update mask (what the servicer turns into JobChanges) ---------------------------------


def request(paths: list[str], **fields: object) -> pb.UpdateJobRequest:
    return pb.UpdateJobRequest(
        job=pb.Job(name="regions/EMSOU/jobs/j1", **fields),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=paths),
    )


def test_mask_takes_only_the_fields_it_names() -> None:
    due = Timestamp()
    due.FromDatetime(START + timedelta(days=3))
    changes = job_changes(
        request(
            ["due_time", "collaborating_regions"],
            due_time=due,
            priority=pb.PRIORITY_URGENT,
            description="not in the mask",
            collaborating_regions=[region_pb2.REGION_LONDON],
        )
    )
    assert changes == JobChanges(due_at=START + timedelta(days=3), collaborating_regions=[Region.LONDON])


def test_mask_may_clear_subjects_and_collaborating_regions() -> None:
    changes = job_changes(request(["subject_entity_ids", "collaborating_regions", "description"]))
    assert changes == JobChanges(subject_entity_ids=[], collaborating_regions=[], description="")


def test_an_empty_mask_is_invalid() -> None:
    with pytest.raises(InvalidArgument) as caught:
        job_changes(request([], description="x"))
    [violation] = caught.value.violations
    assert violation.field == "update_mask" and "due_time" in violation.description


@pytest.mark.parametrize("path", ["state", "owning_region", "assignees", "name", "*", "requesting_unit"])
def test_a_field_that_cannot_change_is_named(path: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        job_changes(request(["description", path], description="x"))
    [violation] = caught.value.violations
    assert violation.field == "update_mask" and violation.description.startswith(f"{path} cannot be changed")


def test_mask_values_are_checked() -> None:
    with pytest.raises(InvalidArgument) as caught:
        job_changes(
            request(
                ["due_time", "priority", "collaborating_regions"],
                collaborating_regions=[region_pb2.REGION_ERSOU, region_pb2.REGION_UNSPECIFIED],
            )
        )
    assert [v.field for v in caught.value.violations] == [
        "job.due_time",
        "job.priority",
        "job.collaborating_regions[1]",
    ]
