"""`toex jobs` for issue 16: --force/--threat on create, update and list; the feedback code a
delivery prints; feedback by code without a login."""

import json
from collections.abc import Callable

from cli_testkit import FakeTasking, make_jwt
from click.testing import Result
from google.protobuf.timestamp_pb2 import Timestamp
from toex.tasking.v1 import tasking_pb2 as pb
from toex.type.v1 import force_pb2, threat_pb2

TOKEN = make_jwt()
Tasking = tuple[FakeTasking, str]
JOB = "regions/EMSOU/jobs/8f14e45f"


def toex(run: Callable[..., Result], tasking: Tasking, *args: str, token: str | None = TOKEN) -> Result:
    _fake, address = tasking
    env: dict[str, str | None] = {
        "TOEX_TOKEN": token,
        "TOEX_TASKING_ADDR": address,
        "TOEX_PURPOSE": "Op Kestrel",
    }
    return run(*args, env=env)


def a_job(**fields: object) -> pb.Job:
    return pb.Job(name=JOB, requesting_officer="DS Smith", **fields)  # type: ignore[arg-type]


def test_create_and_update_send_force_and_threat(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    fake.answers["CreateJob"] = pb.CreateJobResponse(job=a_job())
    fake.answers["UpdateJob"] = pb.UpdateJobResponse(job=a_job())
    result = toex(
        run, tasking,
        "jobs", "create", "--region", "EMSOU", "--type", "comms_analysis", "--unit", "Notts PPU",
        "--officer", "DS Smith", "--operation", "Op X", "--due", "2099-12-01", "--force", "notts", "--threat", "cce",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    created = fake.calls[0].request
    assert created.job.requesting_force == force_pb2.FORCE_NOTTINGHAMSHIRE
    assert created.job.threat_category == threat_pb2.THREAT_CATEGORY_CCE_COUNTY_LINES
    result = toex(run, tasking, "jobs", "update", "EMSOU/8f14e45f", "--force", "MET", "--threat", "ms-labour")
    assert result.exit_code == 0, result.output
    updated = fake.calls[1].request
    assert list(updated.update_mask.paths) == ["requesting_force", "threat_category"]
    assert updated.job.requesting_force == force_pb2.FORCE_METROPOLITAN
    assert updated.job.threat_category == threat_pb2.THREAT_CATEGORY_MODERN_SLAVERY_LABOUR


def test_an_unknown_force_is_a_usage_error_that_calls_nothing(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    result = toex(run, tasking, "jobs", "list", "--force", "GOTHAM")
    assert result.exit_code == 2 and "unknown force" in result.output
    assert tasking[0].calls == []


def test_list_filters_and_show_prints_force_and_threat(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    job = a_job(
        requesting_force=force_pb2.FORCE_NOTTINGHAMSHIRE, threat_category=threat_pb2.THREAT_CATEGORY_CSE
    )
    fake.answers["ListJobs"] = pb.ListJobsResponse(jobs=[job])
    fake.answers["GetJob"] = pb.GetJobResponse(job=job)
    assert (
        toex(
            run, tasking, "jobs", "list", "--region", "EMSOU", "--force", "NOTTS", "--threat", "cse"
        ).exit_code
        == 0
    )
    listed = fake.calls[0].request
    assert listed.requesting_force == force_pb2.FORCE_NOTTINGHAMSHIRE
    assert listed.threat_category == threat_pb2.THREAT_CATEGORY_CSE
    shown = toex(run, tasking, "jobs", "show", "EMSOU/8f14e45f")
    assert "NOTTS (Nottinghamshire Police)" in shown.output
    assert "cse (Child sexual exploitation)" in shown.output


def test_deliver_prints_the_officers_feedback_code(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, _ = tasking
    expires = Timestamp(seconds=4_102_444_800)
    fake.answers["UpdateJobStatus"] = pb.UpdateJobStatusResponse(
        job=a_job(state=pb.JOB_STATE_DELIVERED),
        feedback_token="s3cr3t-token",
        feedback_token_expire_time=expires,
    )
    result = toex(run, tasking, "jobs", "deliver", "EMSOU/8f14e45f", "--product", "report CA-1")
    assert result.exit_code == 0, result.output
    assert fake.calls[0].request == pb.UpdateJobStatusRequest(
        name=JOB, state=pb.JOB_STATE_DELIVERED, product="report CA-1"
    )
    assert "toex jobs feedback --token EMSOU/8f14e45f:s3cr3t-token" in result.output
    assert "DS Smith" in result.output


def test_feedback_by_code_needs_no_login_and_sends_no_bearer(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    fake, _ = tasking
    fake.answers["RecordFeedback"] = pb.RecordFeedbackResponse(name=JOB)
    result = toex(
        run, tasking,
        "jobs", "feedback", "--token", "EMSOU/8f14e45f:s3cr3t-token", "--score", "4", "--comment", "useful",
        "--name", "DS Smith", "--format", "json",
        token=None,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [call] = fake.calls
    assert call.request == pb.RecordFeedbackRequest(
        name=JOB, token="s3cr3t-token", rating=4, comment="useful", officer_name="DS Smith"
    )
    assert "authorization" not in call.metadata
    assert json.loads(result.output)["name"] == JOB


def test_feedback_code_for_another_job_than_name_is_a_usage_error(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    result = toex(
        run,
        tasking,
        "jobs",
        "feedback",
        "EMSOU/other",
        "--token",
        "EMSOU/8f14e45f:x",
        "--score",
        "4",
        token=None,
    )
    assert result.exit_code == 2
    assert tasking[0].calls == []


def test_forces_lists_every_code(run: Callable[..., Result], tasking: Tasking) -> None:
    result = toex(run, tasking, "jobs", "forces", "--format", "json")
    listed = json.loads(result.output)
    assert len(listed["forces"]) == 45
    assert {"code": "NOTTS", "name": "Nottinghamshire Police", "region": "EMSOU"} in listed["forces"]
    assert [t["code"] for t in listed["threats"]][:2] == ["cse", "cce"]
