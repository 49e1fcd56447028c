from datetime import UTC, datetime, timedelta

import pytest
from toex_kernel.errors import FailedPrecondition, InvalidArgument
from toex_kernel.regions import Region
from toex_tasking.domain import events
from toex_tasking.domain.model import Handling, Job, JobState, JobType, Priority

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)


def new_job(**overrides: object) -> Job:
    fields = dict(
        region=Region.EMSOU,
        requesting_unit="Derbyshire Constabulary",
        requesting_officer="DS A",
        operation_name="Op SANDPIPER",
        job_type=JobType.COMMS_ANALYSIS,
        priority=Priority.URGENT,
        due_at=NOW + timedelta(days=3),
        description="phones",
        handling=Handling.C,
        subject_entity_ids=["e1", "e1", "e2"],
        created_by="supervisor.emsou",
        now=NOW,
    )
    fields.update(overrides)
    return Job.raise_job(**fields)  # type: ignore[arg-type]


def test_new_job_is_raised_with_one_created_event_and_unique_subjects() -> None:
    job = new_job()
    assert job.state is JobState.RAISED
    assert job.subject_entity_ids == ["e1", "e2"]
    assert [type(e) for e in job.events] == [events.JobCreated]
    assert job.name == f"regions/EMSOU/jobs/{job.id}"


def test_full_lifecycle() -> None:
    job = new_job()
    job.assign([("researcher.emsou", Region.EMSOU)], by="supervisor.emsou", now=NOW)
    assert job.state is JobState.ASSIGNED
    job.change_state(JobState.IN_PROGRESS, by="researcher.emsou", reason="", product="", now=NOW)
    job.change_state(
        JobState.DELIVERED, by="researcher.emsou", reason="", product="Briefing pack v1", now=NOW
    )
    assert job.product == "Briefing pack v1"
    job.record_feedback(5, "Found two more suspects", by="supervisor.emsou", now=NOW)
    job.change_state(JobState.CLOSED, by="supervisor.emsou", reason="", product="", now=NOW)
    assert job.state is JobState.CLOSED
    kinds = [type(e).__name__ for e in job.events]
    assert kinds == [
        "JobCreated",
        "JobAssigned",
        "JobStatusChanged",
        "JobStatusChanged",
        "JobStatusChanged",
        "FeedbackRecorded",
        "JobStatusChanged",
    ]


@pytest.mark.parametrize(
    "path, target",
    [
        ([], JobState.IN_PROGRESS),
        ([], JobState.DELIVERED),
        ([], JobState.CLOSED),
        (["assign", JobState.IN_PROGRESS, JobState.DELIVERED, JobState.CLOSED], JobState.IN_PROGRESS),
        (["assign", JobState.CANCELLED], JobState.IN_PROGRESS),
        (["assign", JobState.IN_PROGRESS], JobState.DECLINED),
    ],
)
def test_invalid_transitions_are_failed_precondition(path: list, target: JobState) -> None:
    job = new_job()
    for step in path:
        if step == "assign":
            job.assign([("researcher.emsou", Region.EMSOU)], by="s", now=NOW)
        else:
            job.change_state(step, by="s", reason="why", product="p", now=NOW)
    with pytest.raises(FailedPrecondition):
        job.change_state(target, by="s", reason="why", product="p", now=NOW)


def test_assigned_only_through_assignment_and_cancel_needs_reason() -> None:
    job = new_job()
    with pytest.raises(FailedPrecondition):
        job.change_state(JobState.ASSIGNED, by="s", reason="", product="", now=NOW)
    with pytest.raises(InvalidArgument):
        job.change_state(JobState.CANCELLED, by="s", reason=" ", product="", now=NOW)


def test_delivery_needs_a_product() -> None:
    job = new_job()
    job.assign([("researcher.emsou", Region.EMSOU)], by="s", now=NOW)
    job.change_state(JobState.IN_PROGRESS, by="r", reason="", product="", now=NOW)
    with pytest.raises(InvalidArgument) as caught:
        job.change_state(JobState.DELIVERED, by="r", reason="", product="", now=NOW)
    assert caught.value.violations[0].field == "product"


def test_reassign_keeps_owning_region_and_replaces_assignees() -> None:
    job = new_job()
    job.assign([("researcher.emsou", Region.EMSOU)], by="s", now=NOW)
    job.reassign("researcher.london", Region.LONDON, reason="resilience", by="s", now=NOW)
    assert job.region is Region.EMSOU
    assert [(a.username, a.region) for a in job.assignees] == [("researcher.london", Region.LONDON)]
    reassigned = job.events[-1]
    assert isinstance(reassigned, events.JobReassigned)
    assert [a.username for a in reassigned.previous] == ["researcher.emsou"]


def test_reassign_of_unassigned_job_is_refused() -> None:
    with pytest.raises(FailedPrecondition):
        new_job().reassign("researcher.london", Region.LONDON, reason="x", by="s", now=NOW)


def test_feedback_only_after_delivery_and_rating_in_range() -> None:
    job = new_job()
    with pytest.raises(FailedPrecondition):
        job.record_feedback(4, "", by="s", now=NOW)
    job.assign([("r", Region.EMSOU)], by="s", now=NOW)
    job.change_state(JobState.IN_PROGRESS, by="r", reason="", product="", now=NOW)
    job.change_state(JobState.DELIVERED, by="r", reason="", product="x", now=NOW)
    with pytest.raises(InvalidArgument):
        job.record_feedback(6, "", by="s", now=NOW)


def test_overdue_is_noticed_once_per_due_time() -> None:
    job = new_job()
    later = job.due_at + timedelta(minutes=1)
    assert not job.notice_overdue(NOW)
    assert job.notice_overdue(later)
    assert not job.notice_overdue(later + timedelta(hours=1))
    job.due_at = later + timedelta(days=1)  # extended, then missed again
    assert job.notice_overdue(job.due_at + timedelta(seconds=1))
    assert sum(isinstance(e, events.JobOverdue) for e in job.events) == 2


def test_closed_jobs_are_never_overdue() -> None:
    job = new_job()
    job.change_state(JobState.CANCELLED, by="s", reason="withdrawn", product="", now=NOW)
    assert not job.notice_overdue(job.due_at + timedelta(days=1))
