import json
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from cli_testkit import FakeTasking, make_jwt
from click.testing import Result
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2, status_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import region_pb2, security_pb2
from toex_cli.jobs import render_jobs

TOKEN = make_jwt()


def stamp(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> Timestamp:
    value = Timestamp()
    value.FromDatetime(datetime(year, month, day, hour, minute, tzinfo=UTC))
    return value


def a_job(job_id: str = "8f14e45f", **fields: object) -> pb.Job:
    job = pb.Job(
        name=f"regions/EMSOU/jobs/{job_id}",
        requesting_unit="Leicestershire Police",
        requesting_officer="DS Smith",
        operation_name="Op Kestrel",
        owning_region=region_pb2.REGION_EMSOU,
        job_type=pb.JOB_TYPE_COMMS_ANALYSIS,
        priority=pb.PRIORITY_URGENT,
        due_time=stamp(2026, 12, 1, 23, 59),
        state=pb.JOB_STATE_ASSIGNED,
        assignees=[
            pb.Assignee(username="researcher.emsou", region=region_pb2.REGION_EMSOU),
            pb.Assignee(username="researcher.london", region=region_pb2.REGION_LONDON),
        ],
    )
    job.MergeFrom(pb.Job(**fields))  # type: ignore[arg-type]
    return job


Tasking = tuple[FakeTasking, str]


def toex(
    run: Callable[..., Result], tasking: Tasking, *args: str, purpose: str | None = "Op Kestrel"
) -> Result:
    _fake, address = tasking
    env: dict[str, str | None] = {"TOEX_TOKEN": TOKEN, "TOEX_TASKING_ADDR": address, "TOEX_PURPOSE": purpose}
    return run(*args, env=env)


def test_create_sends_the_job_the_user_described(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["CreateJob"] = lambda request: pb.CreateJobResponse(
        job=pb.Job(name="regions/EMSOU/jobs/new1", state=pb.JOB_STATE_RAISED, job_type=request.job.job_type)
    )
    result = toex(
        run, tasking,
        "jobs", "create", "--region", "emsou", "--type", "comms_analysis", "--unit", "Leicestershire Police",
        "--officer", "DS Smith", "--operation", "Op X", "--due", "2026-12-01", "--priority", "urgent",
        "--handling", "p", "--description", "Call data for 40 persons", "--subject", "ent-1", "--subject", "ent-2",
        "--request-id", "5d0f3c1e-0000-4000-8000-000000000001",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [call] = fake.calls
    request = call.request
    assert isinstance(request, pb.CreateJobRequest)
    assert request.parent == "regions/EMSOU"
    assert request.request_id == "5d0f3c1e-0000-4000-8000-000000000001"
    job = request.job
    assert (job.requesting_unit, job.requesting_officer, job.operation_name) == (
        "Leicestershire Police", "DS Smith", "Op X",
    )  # fmt: skip
    assert job.job_type == pb.JOB_TYPE_COMMS_ANALYSIS
    assert job.priority == pb.PRIORITY_URGENT
    assert job.handling == security_pb2.HANDLING_CODE_P
    assert job.due_time.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)
    assert list(job.subject_entity_ids) == ["ent-1", "ent-2"]
    assert call.metadata["authorization"] == f"Bearer {TOKEN}"
    assert call.metadata["x-toex-purpose"] == "Op Kestrel"
    assert "regions/EMSOU/jobs/new1" in result.stdout
    assert "RAISED" in result.stdout


def test_create_defaults_leave_handling_to_the_server(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["CreateJob"] = pb.CreateJobResponse(job=pb.Job(name="regions/SE/jobs/j"))
    result = toex(
        run, tasking, "jobs", "create", "--region", "SE", "--type", "anpr", "--unit", "Kent Police",
        "--officer", "DC Jones", "--operation", "Op Y", "--due", "2026-11-20T17:00:00+01:00", purpose=None,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = fake.calls[0].request.job  # type: ignore[attr-defined]
    assert job.handling == security_pb2.HANDLING_CODE_UNSPECIFIED
    assert job.priority == pb.PRIORITY_ROUTINE
    assert job.due_time.ToDatetime(tzinfo=UTC) == datetime(2026, 11, 20, 16, 0, tzinfo=UTC)
    assert "x-toex-purpose" not in fake.calls[0].metadata


def test_create_with_a_bad_type_is_a_usage_error(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    result = toex(
        run, tasking, "jobs", "create", "--region", "EMSOU", "--type", "phone_tapping", "--unit", "u",
        "--officer", "o", "--operation", "op", "--due", "2026-12-01",
    )  # fmt: skip
    assert result.exit_code == 2
    assert "comms_analysis" in result.stderr
    assert fake.calls == []


def test_list_follows_every_page_with_all(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    pages = {
        "": pb.ListJobsResponse(jobs=[a_job("a1"), a_job("a2")], next_page_token="p2"),
        "p2": pb.ListJobsResponse(jobs=[a_job("a3")], next_page_token="p3"),
        "p3": pb.ListJobsResponse(jobs=[a_job("a4")]),
    }
    fake.answers["ListJobs"] = lambda request: pages[request.page_token]
    result = toex(
        run, tasking, "jobs", "list", "--region", "EMSOU", "--state", "raised", "--state", "in-progress",
        "--assignee", "researcher.emsou", "--due-before", "2026-12-01", "--limit", "2", "--all",
        "--format", "json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert [c.request.page_token for c in fake.calls] == ["", "p2", "p3"]  # type: ignore[attr-defined]
    first = fake.calls[0].request
    assert isinstance(first, pb.ListJobsRequest)
    assert first.parent == "regions/EMSOU"
    assert list(first.states) == [pb.JOB_STATE_RAISED, pb.JOB_STATE_IN_PROGRESS]
    assert first.assignee == "researcher.emsou"
    assert first.page_size == 2
    assert first.due_before.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)
    body = json.loads(result.stdout)
    assert [j["name"] for j in body["jobs"]] == [f"regions/EMSOU/jobs/a{i}" for i in range(1, 5)]
    assert body["jobs"][0]["state"] == "JOB_STATE_ASSIGNED"
    assert body["jobs"][0]["job_type"] == "JOB_TYPE_COMMS_ANALYSIS"
    assert "next_page_token" not in body


def test_list_without_all_shows_one_page_and_says_there_is_more(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    fake, _ = tasking
    fake.answers["ListJobs"] = pb.ListJobsResponse(jobs=[a_job()], next_page_token="p2")
    result = toex(run, tasking, "jobs", "list")
    assert result.exit_code == 0, result.output
    assert len(fake.calls) == 1
    assert fake.calls[0].request.parent == "regions/-"  # type: ignore[attr-defined]
    assert "--all" in result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "TYPE", "PRIORITY", "DUE", "ASSIGNEES", "OPERATION"]
    assert "regions/EMSOU/jobs/8f14e45f" in lines[1]


def test_table_prints_enums_without_prefix() -> None:
    table = render_jobs([a_job(overdue=True)])
    header, row = table.splitlines()
    assert "JOB_STATE" not in row and "JOB_TYPE" not in row and "PRIORITY_" not in row
    assert row.split() == [
        "regions/EMSOU/jobs/8f14e45f", "ASSIGNED", "comms_analysis", "urgent", "2026-12-01", "23:59Z",
        "OVERDUE", "researcher.emsou,researcher.london", "Op", "Kestrel",
    ]  # fmt: skip
    # Columns line up under their headers.
    assert header.index("STATE") == row.index("ASSIGNED")
    assert header.index("OPERATION") == row.index("Op Kestrel")


@pytest.mark.parametrize("name", ["regions/EMSOU/jobs/8f14e45f", "EMSOU/8f14e45f", "emsou/8f14e45f"])
def test_show_accepts_full_and_short_names(run: Callable[..., Result], tasking: Tasking, name: str) -> None:
    fake, _ = tasking
    note = pb.JobNote(author="analyst.emsou", text="Call data requested", create_time=stamp(2026, 11, 2, 10))
    fake.answers["GetJob"] = pb.GetJobResponse(
        job=a_job(description="Two lines\nof description", notes=[note])
    )
    result = toex(run, tasking, "jobs", "show", name)
    assert result.exit_code == 0, result.output
    assert fake.calls[0].request.name == "regions/EMSOU/jobs/8f14e45f"  # type: ignore[attr-defined]
    assert "state:" in result.stdout and "ASSIGNED" in result.stdout
    assert "2026-11-02 10:00Z analyst.emsou: Call data requested" in result.stdout
    assert "researcher.london (LONDON" in result.stdout


def test_show_lists_linked_referrals_with_their_state_and_changes(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    fake, _ = tasking
    referral = pb.LinkedReferral(
        referral="regions/EMSOU/referrals/r1",
        state="DECIDED",
        concerns=["CHILD_SEXUAL_EXPLOITATION"],
        risk_level="HIGH",
        handling=security_pb2.HANDLING_CODE_C,
        update_time=stamp(2026, 11, 4, 9),
        changes=[
            pb.ReferralChange(
                kind=pb.REFERRAL_CHANGE_KIND_DRAFTED,
                state="DRAFT",
                summary="Drafted (child sexual exploitation; risk high) by trigger:WatchlistContactDetected",
                occur_time=stamp(2026, 11, 2, 10),
            ),
            pb.ReferralChange(
                kind=pb.REFERRAL_CHANGE_KIND_DECISION_RECORDED,
                state="DECIDED",
                summary="Childrens social care decision local authority positive on 2026-11-04",
                occur_time=stamp(2026, 11, 4, 9),
            ),
        ],
    )
    fake.answers["GetJob"] = pb.GetJobResponse(job=a_job(linked_referrals=[referral]))
    result = toex(run, tasking, "jobs", "show", "EMSOU/8f14e45f")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    [first] = [i for i, line in enumerate(lines) if line.startswith("referrals:")]
    assert lines[first].split(None, 1)[1].split("  ") == [
        "regions/EMSOU/referrals/r1",
        "DECIDED",
        "child sexual exploitation",
        "risk high",
        "handling C",
        "updated 2026-11-04 09:00Z",
    ]
    assert lines[first + 1].strip() == (
        "2026-11-02 10:00Z Drafted (child sexual exploitation; risk high) by trigger:WatchlistContactDetected"
    )
    assert lines[first + 2].strip().endswith("decision local authority positive on 2026-11-04")
    # A job with none says nothing of referrals.
    fake.answers["GetJob"] = pb.GetJobResponse(job=a_job())
    assert "referrals:" not in toex(run, tasking, "jobs", "show", "EMSOU/8f14e45f").stdout


def test_show_as_json_uses_proto_field_names(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["GetJob"] = pb.GetJobResponse(job=a_job())
    result = toex(run, tasking, "jobs", "show", "EMSOU/8f14e45f", "--format", "json")
    body = json.loads(result.stdout)
    assert body["operation_name"] == "Op Kestrel"
    assert body["owning_region"] == "REGION_EMSOU"
    assert body["due_time"] == "2026-12-01T23:59:00Z"


def test_a_bad_name_is_a_usage_error(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    result = toex(run, tasking, "jobs", "show", "8f14e45f")
    assert result.exit_code == 2
    assert "EMSOU/JOB_ID" in result.stderr
    assert fake.calls == []


def test_mutations_send_what_was_asked(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    job = a_job()
    fake.answers.update(
        AssignJob=pb.AssignJobResponse(job=job),
        ReassignJob=pb.ReassignJobResponse(job=job),
        UpdateJobStatus=pb.UpdateJobStatusResponse(job=job),
        AddJobNote=pb.AddJobNoteResponse(
            note=pb.JobNote(name="regions/EMSOU/jobs/8f14e45f/notes/n1", text="t")
        ),
        RecordFeedback=pb.RecordFeedbackResponse(job=job),
    )
    commands = [
        ("jobs", "assign", "EMSOU/8f14e45f", "researcher.emsou", "analyst.emsou"),
        ("jobs", "reassign", "EMSOU/8f14e45f", "researcher.london", "--reason", "capacity"),
        ("jobs", "status", "EMSOU/8f14e45f", "delivered", "--product", "report CA-1"),
        ("jobs", "note", "EMSOU/8f14e45f", "Call data requested"),
        ("jobs", "feedback", "EMSOU/8f14e45f", "--rating", "4", "--comment", "useful"),
    ]
    for command in commands:
        result = toex(run, tasking, *command)
        assert result.exit_code == 0, (command, result.output)
    requests = {c.method: c.request for c in fake.calls}
    assert requests["AssignJob"] == pb.AssignJobRequest(
        name="regions/EMSOU/jobs/8f14e45f", assignees=["researcher.emsou", "analyst.emsou"]
    )
    assert requests["ReassignJob"] == pb.ReassignJobRequest(
        name="regions/EMSOU/jobs/8f14e45f", assignee="researcher.london", reason="capacity"
    )
    assert requests["UpdateJobStatus"] == pb.UpdateJobStatusRequest(
        name="regions/EMSOU/jobs/8f14e45f", state=pb.JOB_STATE_DELIVERED, product="report CA-1"
    )
    assert requests["AddJobNote"] == pb.AddJobNoteRequest(
        parent="regions/EMSOU/jobs/8f14e45f", text="Call data requested"
    )
    assert requests["RecordFeedback"] == pb.RecordFeedbackRequest(
        name="regions/EMSOU/jobs/8f14e45f", rating=4, comment="useful"
    )


def test_feedback_rating_out_of_range_is_a_usage_error(run: Callable[..., Result], tasking: Tasking) -> None:
    result = toex(run, tasking, "jobs", "feedback", "EMSOU/8f14e45f", "--rating", "6")
    assert result.exit_code == 2
    assert tasking[0].calls == []


def test_reassign_needs_a_reason(run: Callable[..., Result], tasking: Tasking) -> None:
    result = toex(run, tasking, "jobs", "reassign", "EMSOU/8f14e45f", "researcher.london")
    assert result.exit_code == 2
    assert "--reason" in result.stderr


def test_capacity(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["GetRegionCapacity"] = pb.GetRegionCapacityResponse(
        name="regions/EMSOU/capacity",
        researchers=[
            pb.ResearcherLoad(username="researcher.emsou", region=region_pb2.REGION_EMSOU, open_jobs=2),
            pb.ResearcherLoad(
                username="researcher.london", region=region_pb2.REGION_LONDON, open_jobs=3, overdue_jobs=1
            ),
        ],
        unassigned_jobs=4,
        open_jobs=9,
    )
    result = toex(run, tasking, "jobs", "capacity", "emsou")
    assert result.exit_code == 0, result.output
    assert fake.calls[0].request.name == "regions/EMSOU/capacity"  # type: ignore[attr-defined]
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RESEARCHER", "REGION", "OPEN", "OVERDUE"]
    assert lines[1].split() == ["researcher.london", "LONDON", "3", "1"]
    assert "9 open jobs, 4 unassigned" in result.stdout


def test_update_builds_the_mask_from_the_options_given(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["UpdateJob"] = lambda request: pb.UpdateJobResponse(
        job=a_job(collaborating_regions=request.job.collaborating_regions, priority=request.job.priority)
    )
    result = toex(
        run, tasking, "jobs", "update", "EMSOU/8f14e45f", "--due", "2026-12-15", "--priority", "priority",
        "--collaborating-region", "london", "--collaborating-region", "ERSOU", "--request-id", "u-1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [call] = fake.calls
    request = call.request
    assert isinstance(request, pb.UpdateJobRequest)
    assert request.job.name == "regions/EMSOU/jobs/8f14e45f"
    assert list(request.update_mask.paths) == ["due_time", "priority", "collaborating_regions"]
    assert request.job.due_time.ToDatetime(tzinfo=UTC) == datetime(2026, 12, 15, 23, 59, 59, tzinfo=UTC)
    assert request.job.priority == pb.PRIORITY_PRIORITY
    assert list(request.job.collaborating_regions) == [region_pb2.REGION_LONDON, region_pb2.REGION_ERSOU]
    assert request.request_id == "u-1"
    assert not request.job.description and not request.job.subject_entity_ids
    assert "collaborating:" in result.stdout and "LONDON, ERSOU" in result.stdout


def test_update_sends_only_what_it_names(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["UpdateJob"] = pb.UpdateJobResponse(job=a_job())
    cases = [
        (["--description", ""], ["description"]),
        (["--subject", "ent-1", "--subject", "ent-2"], ["subject_entity_ids"]),
        (["--clear-subjects"], ["subject_entity_ids"]),
        (["--clear-collaborating-regions"], ["collaborating_regions"]),
    ]
    for options, paths in cases:
        result = toex(run, tasking, "jobs", "update", "EMSOU/8f14e45f", *options)
        assert result.exit_code == 0, (options, result.output)
        request = fake.calls[-1].request
        assert list(request.update_mask.paths) == paths, options  # type: ignore[attr-defined]
    assert list(fake.calls[1].request.job.subject_entity_ids) == ["ent-1", "ent-2"]  # type: ignore[attr-defined]
    assert not fake.calls[2].request.job.subject_entity_ids  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--subject", "ent-1", "--clear-subjects"],
        ["--collaborating-region", "LONDON", "--clear-collaborating-regions"],
        ["--collaborating-region", "ATLANTIS"],
        ["--priority", "whenever"],
    ],
)
def test_update_usage_errors_call_nothing(
    run: Callable[..., Result], tasking: Tasking, options: list[str]
) -> None:
    result = toex(run, tasking, "jobs", "update", "EMSOU/8f14e45f", *options)
    assert result.exit_code == 2, result.output
    assert tasking[0].calls == []


def test_update_refusal_points_at_the_option(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    status = status_pb2.Status(code=3, message="invalid request: job.due_time: must be in the future")
    violation = error_details_pb2.BadRequest.FieldViolation(
        field="job.due_time", description="must be in the future"
    )
    status.details.add().Pack(error_details_pb2.BadRequest(field_violations=[violation]))
    fake.answers["UpdateJob"] = status
    result = toex(run, tasking, "jobs", "update", "EMSOU/8f14e45f", "--due", "2020-01-01")
    assert result.exit_code == 1
    assert "job.due_time (--due): must be in the future" in result.stderr


def test_create_names_collaborating_regions(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["CreateJob"] = pb.CreateJobResponse(job=pb.Job(name="regions/EMSOU/jobs/new1"))
    result = toex(
        run, tasking, "jobs", "create", "--region", "EMSOU", "--type", "comms_analysis", "--unit", "u",
        "--officer", "o", "--operation", "Op X", "--due", "2026-12-01",
        "--collaborating-region", "LONDON", "--collaborating-region", "rocuwm",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    job = fake.calls[0].request.job  # type: ignore[attr-defined]
    assert list(job.collaborating_regions) == [region_pb2.REGION_LONDON, region_pb2.REGION_ROCUWM]


def test_coordinator_assigns_another_regions_researchers(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    fake, _ = tasking
    fake.answers["AssignJob"] = pb.AssignJobResponse(job=a_job())
    result = toex(run, tasking, "jobs", "assign", "EMSOU/8f14e45f", "researcher.london", "researcher.tarian")
    assert result.exit_code == 0, result.output
    assert fake.calls[0].request == pb.AssignJobRequest(
        name="regions/EMSOU/jobs/8f14e45f", assignees=["researcher.london", "researcher.tarian"]
    )
    assert "researcher.london (LONDON" in result.stdout
