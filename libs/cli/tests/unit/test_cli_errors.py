import socket
from collections.abc import Callable

import pytest
from cli_testkit import FakeTasking, make_jwt
from click.testing import Result
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex_cli.errors import hint_for, render_status
from toex_cli.jobs import CREATE_FIELDS
from toex_common.grpc.status import to_status
from toex_kernel.errors import FailedPrecondition, InvalidArgument, Violations
from toex_kernel.policy import MethodPolicy, MethodRule
from toex_kernel.principal import Principal, Role
from toex_kernel.regions import Region

Tasking = tuple[FakeTasking, str]
CREATE = (
    "jobs", "create", "--region", "EMSOU", "--type", "anpr", "--unit", "u", "--officer", "o",
    "--operation", "op", "--due", "2026-12-01",
)  # fmt: skip


def packed(message: object) -> any_pb2.Any:
    value = any_pb2.Any()
    value.Pack(message)  # type: ignore[arg-type]
    return value


def test_bad_request_details_are_listed_field_by_field() -> None:
    status = status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message="invalid request",
        details=[
            packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(
                            field="job.due_time", description="must be in the future"
                        ),
                        error_details_pb2.BadRequest.FieldViolation(
                            field="job.requesting_unit", description="must not be empty"
                        ),
                    ]
                )
            )
        ],
    )
    error = render_status(status, field_options=CREATE_FIELDS)
    assert error.exit_code == 1
    assert error.format_message().splitlines() == [
        "INVALID_ARGUMENT: invalid request",
        "  field job.due_time (--due): must be in the future",
        "  field job.requesting_unit (--unit): must not be empty",
    ]
    assert "correct the values" in error.hint


def bad_request(message: str, *violations: tuple[str, str]) -> status_pb2.Status:
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT,
        message=message,
        details=[
            packed(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
                        for field, description in violations
                    ]
                )
            )
        ],
    )


def test_a_violation_the_message_repeats_is_shown_once() -> None:
    # What toex_kernel.errors.Violations.raise_if_any sends: the summary repeats every violation.
    status = bad_request(
        "invalid request: job.due_time: must be in the future; job.operation_name: must not be empty",
        ("job.due_time", "must be in the future"),
        ("job.operation_name", "must not be empty"),
    )
    lines = render_status(status, field_options=CREATE_FIELDS).format_message().splitlines()
    assert lines == [
        "INVALID_ARGUMENT: invalid request",
        "  field job.due_time (--due): must be in the future",
        "  field job.operation_name (--operation): must not be empty",
    ]


def test_a_message_that_is_only_the_violation_leaves_the_code() -> None:
    # What InvalidArgument.field sends.
    status = bad_request("job.due_time: must be in the future", ("job.due_time", "must be in the future"))
    assert render_status(status, field_options=CREATE_FIELDS).format_message().splitlines() == [
        "INVALID_ARGUMENT",
        "  field job.due_time (--due): must be in the future",
    ]


def test_what_the_message_adds_to_the_violations_still_shows() -> None:
    status = bad_request(
        "invalid request: job.due_time: must be in the future; at most 20 subjects per job",
        ("job.due_time", "must be in the future"),
    )
    assert render_status(status).format_message().splitlines() == [
        "INVALID_ARGUMENT: invalid request: at most 20 subjects per job",
        "  field job.due_time: must be in the future",
    ]


def test_precondition_failures_are_listed() -> None:
    status = to_status(FailedPrecondition("job is CLOSED", type="STATE", subject="regions/EMSOU/jobs/1"))
    error = render_status(status)
    assert error.format_message().splitlines() == [
        "FAILED_PRECONDITION: job is CLOSED",
        "  precondition STATE on regions/EMSOU/jobs/1: job is CLOSED",
    ]
    assert "--purpose" not in error.hint


def test_a_read_without_purpose_hints_at_the_option(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, address = tasking
    # Exactly what the server's policy raises for a read without a purpose.
    policy = MethodPolicy({"/toex.tasking.v1.TaskingService/ListJobs": MethodRule.read(Role.RESEARCHER)})
    with pytest.raises(FailedPrecondition) as refused:
        policy.check(
            Principal("s", "researcher.emsou", Region.EMSOU, frozenset({Role.RESEARCHER})),
            "/toex.tasking.v1.TaskingService/ListJobs",
            "",
        )
    fake.answers["ListJobs"] = to_status(refused.value)

    result = run("jobs", "list", env={"TOEX_TOKEN": make_jwt(), "TOEX_TASKING_ADDR": address})

    assert result.exit_code == 1
    assert result.stdout == ""
    assert "FAILED_PRECONDITION: state the purpose of this call" in result.stderr
    assert (
        "precondition PURPOSE on x-toex-purpose: reads of intelligence must carry a purpose" in result.stderr
    )
    assert 'Hint: say why you are reading, for example: toex --purpose "Op NAME"' in result.stderr


def test_field_violations_from_the_server_name_the_options(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    fake, address = tasking
    problems = Violations()
    problems.add("job.due_time", "must be in the future")
    problems.add("job.operation_name", "must not be empty")
    with pytest.raises(InvalidArgument) as invalid:
        problems.raise_if_any()
    fake.answers["CreateJob"] = to_status(invalid.value)

    result = run(*CREATE, env={"TOEX_TOKEN": make_jwt(), "TOEX_TASKING_ADDR": address})

    assert result.exit_code == 1
    assert "INVALID_ARGUMENT: invalid request" in result.stderr
    assert "field job.due_time (--due): must be in the future" in result.stderr
    assert "field job.operation_name (--operation): must not be empty" in result.stderr
    assert result.stderr.count("must be in the future") == 1
    assert result.stderr.count("must not be empty") == 1


def test_a_plain_status_without_details(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, address = tasking
    fake.answers["GetJob"] = status_pb2.Status(
        code=code_pb2.PERMISSION_DENIED, message="GetJob needs one of the roles: analyst"
    )
    result = run(
        "--purpose",
        "Op X",
        "jobs",
        "show",
        "EMSOU/1",
        env={"TOEX_TOKEN": make_jwt(), "TOEX_TASKING_ADDR": address},
    )
    assert result.exit_code == 1
    assert "PERMISSION_DENIED: GetJob needs one of the roles: analyst" in result.stderr
    assert "toex whoami" in result.stderr


def test_an_unreachable_server_says_where_it_looked(run: Callable[..., Result]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run(
        "--timeout", "3", "--purpose", "Op X", "jobs", "list",
        env={"TOEX_TOKEN": make_jwt(), "TOEX_TASKING_ADDR": f"127.0.0.1:{port}"},
    )  # fmt: skip
    assert result.exit_code == 1
    assert "UNAVAILABLE" in result.stderr
    assert f"tasking service running at 127.0.0.1:{port}" in result.stderr


def list_jobs_failing(run: Callable[..., Result], tasking: Tasking, code: int, message: str) -> Result:
    """`toex jobs list` against a tasking service that answers ListJobs with this status."""
    fake, address = tasking
    fake.answers["ListJobs"] = status_pb2.Status(code=code, message=message)
    return run(
        "--purpose", "Op X", "jobs", "list", env={"TOEX_TOKEN": make_jwt(), "TOEX_TASKING_ADDR": address}
    )


def test_a_dependency_of_a_running_service_is_not_reported_as_the_service_down(
    run: Callable[..., Result], tasking: Tasking
) -> None:
    # What the audit interceptor answers when it cannot write the audit record.
    result = list_jobs_failing(run, tasking, code_pb2.UNAVAILABLE, "audit log unavailable; try again")
    address = tasking[1]
    assert result.exit_code == 1
    assert "UNAVAILABLE: audit log unavailable; try again" in result.stderr
    assert "service running" not in result.stderr and "make up" not in result.stderr
    assert f"Hint: the tasking service at {address} answered" in result.stderr
    assert "try again shortly" in result.stderr


@pytest.mark.parametrize(
    ("message", "debug"),
    [
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:9: "
            "Failed to connect to remote host: Connection refused",
            "",
        ),
        (
            "errors resolving tasking.invalid:50051: [field:hostname lookup error:address lookup failed "
            "for tasking.invalid:50051: Domain name not found]",
            "",
        ),
        ("DNS resolution failed for tasking.invalid:50051", ""),
        (
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.1:50051: "
            "connect timed out: Deadline Exceeded",
            "",
        ),
        (
            "Socket closed",
            "UNAVAILABLE:Socket closed",
        ),
        (  # older grpc: a bare summary in the details, the reason in the debug string
            "failed to connect to all addresses",
            '{"created":"@1","description":"Failed to pick subchannel","file":"client_channel.cc"}',
        ),
    ],
)
def test_a_channel_that_did_not_reach_the_service_asks_whether_it_runs(message: str, debug: str) -> None:
    hint = hint_for("UNAVAILABLE", message, [], service="tasking", address="127.0.0.1:50051", debug=debug)
    assert hint.startswith("is the tasking service running at 127.0.0.1:50051?")
    assert "make up" in hint


@pytest.mark.parametrize(
    "message",
    [
        "audit log unavailable; try again",
        "the PND cannot be searched now: ConnectError: [Errno 111] Connection refused",
        "the PND's holdings cannot be read now: HTTP 503",
        "user directory unavailable: failed to connect to all addresses",
        "identity provider keys are unavailable; try again shortly",
    ],
)
def test_unavailable_from_a_running_service_says_to_try_again(message: str) -> None:
    hint = hint_for(
        "UNAVAILABLE", message, [], service="pnd", address="127.0.0.1:50053", debug=f"UNAVAILABLE:{message}"
    )
    assert "running" not in hint and "make up" not in hint
    assert hint.startswith("the pnd service at 127.0.0.1:50053 answered")
    assert "try again shortly" in hint


def test_not_logged_in_is_refused_before_calling(run: Callable[..., Result], tasking: Tasking) -> None:
    fake, address = tasking
    result = run("--purpose", "Op X", "jobs", "list", env={"TOEX_TASKING_ADDR": address})
    assert result.exit_code == 1
    assert "not logged in; run `toex login`" in result.stderr
    assert fake.calls == []


def test_unauthenticated_says_to_log_in(run: Callable[..., Result], tasking: Tasking) -> None:
    result = list_jobs_failing(run, tasking, code_pb2.UNAUTHENTICATED, "token has expired; log in again")
    assert result.exit_code == 1
    assert "Hint: run `toex login`" in result.stderr


def test_a_purpose_must_be_ascii(run: Callable[..., Result], tasking: Tasking) -> None:
    result = run(
        "--purpose", "Op Ærø", "jobs", "list", env={"TOEX_TOKEN": make_jwt(), "TOEX_TASKING_ADDR": tasking[1]}
    )
    assert result.exit_code == 2
    assert tasking[0].calls == []


def test_the_create_field_map_names_real_fields() -> None:
    # The server names fields by their proto paths; the map must only name real create fields.
    fields = {f.name for f in pb.Job.DESCRIPTOR.fields}
    for path in CREATE_FIELDS:
        head, _, rest = path.partition(".")
        assert (rest in fields) if head == "job" else head in pb.CreateJobRequest.DESCRIPTOR.fields_by_name


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("tls://127.0.0.1:443", True),
        ("tasking.invalid:50051", False),
    ],
)
def test_tokens_over_plaintext_are_only_quiet_on_loopback(address: str, loopback: bool) -> None:
    from toex_cli.context import is_loopback

    assert is_loopback(address) is loopback


def test_a_plaintext_remote_address_warns(run: Callable[..., Result]) -> None:
    # Not logged in, so the command stops before any connection is attempted.
    result = run("--purpose", "Op X", "--tasking-addr", "tasking.invalid:50051", "jobs", "list")
    assert "unencrypted; use tls://tasking.invalid:50051" in result.stderr
    assert "not logged in" in result.stderr
    assert result.exit_code == 1
