"""Jobs carry the requesting force and threat category; delivering asks the requesting officer
for feedback with a one-time token that works once, on its own job, until it expires."""

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf import field_mask_pb2
from toex.tasking.events.v2 import events_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import force_pb2, threat_pb2
from toex_common.testing.fakes import principal
from toex_kernel.errors import InvalidArgument, PermissionDenied
from toex_kernel.forces import FORCES, Force, ThreatCategory
from toex_kernel.principal import Role
from toex_kernel.regions import Region
from toex_tasking.adapters import mapping
from toex_tasking.demo import demo_directory
from toex_tasking.domain import commands
from toex_tasking.domain.model import (
    BY_TOKEN,
    TOKEN_EXPIRED,
    TOKEN_INVALID,
    TOKEN_USED,
    Handling,
    JobChanges,
    JobState,
    JobType,
    Priority,
)
from toex_tasking.entrypoints.grpc_api import job_changes
from toex_tasking.service_layer import handlers

from .fakes import FakeTaskingUnitOfWork

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
SUP = principal("supervisor.emsou", Role.SUPERVISOR)
RES = principal("researcher.emsou", Role.RESEARCHER)


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def uow() -> FakeTaskingUnitOfWork:
    return FakeTaskingUnitOfWork()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deps(uow: FakeTaskingUnitOfWork, clock: Clock) -> handlers.Deps:
    return handlers.Deps(uow=lambda: uow, directory=demo_directory(), clock=clock)  # type: ignore[arg-type,return-value]


def create(**overrides) -> commands.CreateJob:
    fields = dict(
        actor=SUP,
        region=Region.EMSOU,
        requesting_unit="Nottinghamshire Police, Public Protection",
        requesting_officer="DS Hall 1234",
        operation_name="Op Larch",
        job_type=JobType.COMMS_ANALYSIS,
        priority=Priority.ROUTINE,
        due_at=NOW + timedelta(days=5),
        description="",
        handling=Handling.C,
        requesting_force=Force.NOTTINGHAMSHIRE,
        threat_category=ThreatCategory.CCE_COUNTY_LINES,
    )
    fields.update(overrides)
    return commands.CreateJob(**fields)  # type: ignore[arg-type]


def events_of(uow: FakeTaskingUnitOfWork, name: str) -> list[bytes]:
    return [e.payload for e in uow.committed_events if e.event_type.endswith(f".{name}")]


async def delivered(deps: handlers.Deps, **overrides) -> tuple[str, str]:
    """A delivered job's id and its feedback token, as the delivering call answered it."""
    job = await handlers.create_job(create(**overrides), deps)
    await handlers.assign_job(commands.AssignJob(SUP, Region.EMSOU, job.id, ["researcher.emsou"]), deps)
    for state in (JobState.IN_PROGRESS, JobState.DELIVERED):
        job = await handlers.update_job_status(
            commands.UpdateJobStatus(RES, Region.EMSOU, job.id, state, "", "Network chart and briefing"),
            deps,
        )
    assert job.issued_feedback_token
    return job.id, job.issued_feedback_token


def feedback(job_id: str, token: str, rating: int = 4, comment: str = "Led to two arrests", **kw):
    return commands.RecordFeedback(None, Region.EMSOU, job_id, rating, comment, token=token, **kw)


def test_the_force_list_has_43_territorial_forces_btp_and_nca_each_with_a_code() -> None:
    assert len(Force) == 45
    territorial = [f for f in Force if f.region is not None]
    assert len(territorial) == 43
    assert Force.BTP.region is None and Force.NCA.region is None
    assert len({FORCES[f].code for f in Force}) == 45
    # The contract's values and names are the kernel's, one for one.
    assert len(force_pb2.Force.values()) == len(Force) + 1
    for force in Force:
        assert force_pb2.Force.Name(force.to_proto()) == f"FORCE_{force.value}"  # type: ignore[arg-type]
        assert Force.from_proto(force.to_proto()) is force
    assert len(threat_pb2.ThreatCategory.values()) == len(ThreatCategory) + 1
    for threat in ThreatCategory:
        assert threat_pb2.ThreatCategory.Name(threat.to_proto()) == f"THREAT_CATEGORY_{threat.value}"  # type: ignore[arg-type]
        assert ThreatCategory.from_proto(threat.to_proto()) is threat
    assert Force.parse("notts") is Force.NOTTINGHAMSHIRE and Force.parse("MET") is Force.METROPOLITAN
    assert Force.NOTTINGHAMSHIRE.region is Region.EMSOU
    assert ThreatCategory.parse("cce") is ThreatCategory.CCE_COUNTY_LINES
    with pytest.raises(ValueError, match="unknown force"):
        Force.parse("GOTHAM")


async def test_create_stores_force_and_threat_and_job_created_carries_them(deps, uow) -> None:
    job = await handlers.create_job(create(), deps)
    stored = uow.jobs.jobs[job.id]
    assert (stored.requesting_force, stored.threat_category) == (
        Force.NOTTINGHAMSHIRE,
        ThreatCategory.CCE_COUNTY_LINES,
    )
    [payload] = events_of(uow, "JobCreated")
    message = events_pb2.JobCreated.FromString(payload)
    assert message.requesting_force == force_pb2.FORCE_NOTTINGHAMSHIRE
    assert message.threat_category == threat_pb2.THREAT_CATEGORY_CCE_COUNTY_LINES
    shown = mapping.job_to_proto(job)
    assert shown.requesting_force == force_pb2.FORCE_NOTTINGHAMSHIRE
    assert shown.requesting_unit == "Nottinghamshire Police, Public Protection"


async def test_update_changes_force_and_threat_and_job_updated_carries_them(deps, uow) -> None:
    job = await handlers.create_job(create(), deps)
    changes = JobChanges(requesting_force=Force.DERBYSHIRE, threat_category=ThreatCategory.CSE)
    await handlers.update_job(commands.UpdateJob(SUP, Region.EMSOU, job.id, changes), deps)
    [payload] = events_of(uow, "JobUpdated")
    message = events_pb2.JobUpdated.FromString(payload)
    assert list(message.changed_fields) == ["requesting_force", "threat_category"]
    assert message.requesting_force == force_pb2.FORCE_DERBYSHIRE
    assert message.threat_category == threat_pb2.THREAT_CATEGORY_CSE
    # The same values again change nothing and publish nothing.
    await handlers.update_job(commands.UpdateJob(SUP, Region.EMSOU, job.id, changes), deps)
    assert len(events_of(uow, "JobUpdated")) == 1


def test_unknown_force_or_threat_numbers_are_invalid_arguments_naming_the_field() -> None:
    request = pb.UpdateJobRequest(
        job=pb.Job(name="regions/EMSOU/jobs/abc", requesting_force=99, threat_category=77),  # type: ignore[arg-type]
        update_mask=field_mask_pb2.FieldMask(paths=["requesting_force", "threat_category"]),
    )
    with pytest.raises(InvalidArgument) as raised:
        job_changes(request)
    assert {v.field for v in raised.value.violations} == {"job.requesting_force", "job.threat_category"}
    unset = pb.UpdateJobRequest(
        job=pb.Job(name="regions/EMSOU/jobs/abc"),
        update_mask=field_mask_pb2.FieldMask(paths=["requesting_force"]),
    )
    with pytest.raises(InvalidArgument, match="choose a force"):
        job_changes(unset)


async def test_list_filters_by_force_and_threat(deps) -> None:
    notts = await handlers.create_job(create(), deps)
    await handlers.create_job(create(requesting_force=Force.LEICESTERSHIRE), deps)
    await handlers.create_job(create(threat_category=ThreatCategory.CSE), deps)

    async def ids(force=None, threat=None) -> list[str]:
        cmd = commands.ListJobs(SUP, Region.EMSOU, frozenset(), "", None, 50, None, force, threat)
        jobs, _ = await handlers.list_jobs(cmd, deps)
        return [j.id for j in jobs]

    assert len(await ids()) == 3
    assert len(await ids(force=Force.NOTTINGHAMSHIRE)) == 2
    assert await ids(Force.NOTTINGHAMSHIRE, ThreatCategory.CCE_COUNTY_LINES) == [notts.id]


async def test_delivery_publishes_feedback_requested_with_the_token_and_keeps_only_its_hash(
    deps, uow
) -> None:
    job_id, token = await delivered(deps)
    [payload] = events_of(uow, "FeedbackRequested")
    message = events_pb2.FeedbackRequested.FromString(payload)
    assert message.token == token
    assert message.requesting_officer == "DS Hall 1234"
    assert message.expire_time.ToDatetime(UTC) == NOW + timedelta(days=30)
    stored = uow.jobs.jobs[job_id]
    assert stored.feedback_token_hash and token not in stored.feedback_token_hash
    assert token not in repr(stored)
    assert len(token) >= 40


async def test_the_officer_records_feedback_once_with_the_token(deps, uow) -> None:
    job_id, token = await delivered(deps)
    job = await handlers.record_feedback(feedback(job_id, token, officer_name="DS Hall"), deps)
    assert job.feedback is not None
    assert (job.feedback.rating, job.feedback.comment, job.feedback.officer_name) == (
        4,
        "Led to two arrests",
        "DS Hall",
    )
    assert job.feedback.recorded_by == BY_TOKEN
    [payload] = events_of(uow, "FeedbackRecorded")
    recorded = events_pb2.FeedbackRecorded.FromString(payload)
    assert recorded.rating == 4 and recorded.has_comment

    with pytest.raises(PermissionDenied) as again:
        await handlers.record_feedback(feedback(job_id, token, rating=1, comment="changed my mind"), deps)
    assert again.value.reason == TOKEN_USED
    assert uow.jobs.jobs[job_id].feedback.rating == 4  # type: ignore[union-attr]
    assert len(events_of(uow, "FeedbackRecorded")) == 1


async def test_another_jobs_token_cannot_record_on_this_job(deps, uow) -> None:
    first, _ = await delivered(deps)
    _, second_token = await delivered(deps)
    with pytest.raises(PermissionDenied) as refused:
        await handlers.record_feedback(feedback(first, second_token), deps)
    assert refused.value.reason == TOKEN_INVALID
    assert uow.jobs.jobs[first].feedback is None
    # ...nor a made-up token, nor any token on a job that does not exist.
    with pytest.raises(PermissionDenied) as made_up:
        await handlers.record_feedback(feedback(first, "x" * 43), deps)
    assert made_up.value.reason == TOKEN_INVALID
    with pytest.raises(PermissionDenied) as missing:
        await handlers.record_feedback(feedback("nosuchjob", second_token), deps)
    assert missing.value.reason == TOKEN_INVALID
    assert events_of(uow, "FeedbackRecorded") == []


async def test_an_expired_token_is_refused_and_records_nothing(deps, uow, clock) -> None:
    job_id, token = await delivered(deps)
    clock.now = NOW + timedelta(days=30, seconds=1)
    with pytest.raises(PermissionDenied) as refused:
        await handlers.record_feedback(feedback(job_id, token), deps)
    assert refused.value.reason == TOKEN_EXPIRED
    assert uow.jobs.jobs[job_id].feedback is None
    # Just inside its life it works.
    clock.now = NOW + timedelta(days=29, hours=23)
    await handlers.record_feedback(feedback(job_id, token), deps)


async def test_the_token_lifetime_is_configurable(uow, clock) -> None:
    short = handlers.Deps(
        uow=lambda: uow,  # type: ignore[arg-type,return-value]
        directory=demo_directory(),
        clock=clock,
        feedback_token_ttl=timedelta(days=2),
    )
    job_id, token = await delivered(short)
    clock.now = NOW + timedelta(days=3)
    with pytest.raises(PermissionDenied):
        await handlers.record_feedback(feedback(job_id, token), short)


async def test_bad_feedback_is_an_invalid_argument_and_records_nothing(deps, uow) -> None:
    job_id, token = await delivered(deps)
    with pytest.raises(InvalidArgument) as raised:
        await handlers.record_feedback(feedback(job_id, token, rating=6, comment="x" * 10_001), deps)
    assert {v.field for v in raised.value.violations} == {"rating", "comment"}
    with pytest.raises(InvalidArgument, match="token"):
        await handlers.record_feedback(feedback(job_id, ""), deps)
    assert uow.jobs.jobs[job_id].feedback is None


async def test_a_supervisor_recording_feedback_uses_up_the_token(deps, uow) -> None:
    job_id, token = await delivered(deps)
    await handlers.record_feedback(commands.RecordFeedback(SUP, Region.EMSOU, job_id, 5, "by phone"), deps)
    with pytest.raises(PermissionDenied) as refused:
        await handlers.record_feedback(feedback(job_id, token), deps)
    assert refused.value.reason == TOKEN_USED


async def test_the_demo_jobs_carry_a_force_and_a_threat(deps, uow) -> None:
    from toex_tasking.demo import seed

    names = await seed(deps)
    assert names
    for job in uow.jobs.jobs.values():
        assert job.requesting_force is not None and job.threat_category is not None
