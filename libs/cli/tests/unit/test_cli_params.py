from datetime import UTC, datetime

import pytest
from toex.tasking.v1 import tasking_pb2 as pb
from toex_cli.params import enum_short_name, parse_enum, parse_job_name, parse_when


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("regions/EMSOU/jobs/abc", "regions/EMSOU/jobs/abc"),
        ("EMSOU/abc", "regions/EMSOU/jobs/abc"),
        ("emsou/8f14e45f-0b2c", "regions/EMSOU/jobs/8f14e45f-0b2c"),
        ("EMSOU/jobs/abc", "regions/EMSOU/jobs/abc"),
        ("regions/london/jobs/x_1", "regions/LONDON/jobs/x_1"),
        (" /NATIONAL/j1/ ", "regions/NATIONAL/jobs/j1"),
    ],
)
def test_job_names_in_full_or_short_form(text: str, expected: str) -> None:
    assert parse_job_name(text) == expected


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("abc", "not a job name"),
        ("regions/EMSOU/tasks/abc", "not a job name"),
        ("MIDLANDS/abc", "unknown region"),
        ("EMSOU/a.b", "not a job id"),
    ],
)
def test_bad_job_names_say_what_is_expected(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        parse_job_name(text)


def test_a_date_means_the_end_of_that_day_utc() -> None:
    assert parse_when("2026-12-01") == datetime(2026, 12, 1, 23, 59, 59, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-12-01T17:00:00Z", datetime(2026, 12, 1, 17, 0, tzinfo=UTC)),
        ("2026-06-01T09:30+01:00", datetime(2026, 6, 1, 8, 30, tzinfo=UTC)),
        ("2026-12-01T17:00", datetime(2026, 12, 1, 17, 0, tzinfo=UTC)),  # no offset: UTC
    ],
)
def test_datetimes_are_converted_to_utc(text: str, expected: datetime) -> None:
    assert parse_when(text) == expected


@pytest.mark.parametrize("text", ["tomorrow", "2026-13-01", "01/12/2026"])
def test_bad_dates_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_when(text)


@pytest.mark.parametrize("text", ["in_progress", "IN-PROGRESS", "JOB_STATE_IN_PROGRESS", "In_Progress"])
def test_enum_values_by_short_name_in_any_case(text: str) -> None:
    assert parse_enum(pb.JobState.DESCRIPTOR, text) == pb.JOB_STATE_IN_PROGRESS


def test_unspecified_is_not_a_choice() -> None:
    with pytest.raises(ValueError, match="raised, assigned"):
        parse_enum(pb.JobState.DESCRIPTOR, "unspecified")


def test_enum_names_print_without_prefix() -> None:
    assert enum_short_name(pb.JobState.DESCRIPTOR, pb.JOB_STATE_RAISED) == "RAISED"
    assert enum_short_name(pb.JobType.DESCRIPTOR, pb.JOB_TYPE_COMMS_ANALYSIS) == "COMMS_ANALYSIS"
    assert enum_short_name(pb.Priority.DESCRIPTOR, pb.PRIORITY_PRIORITY) == "PRIORITY"
    assert enum_short_name(pb.JobState.DESCRIPTOR, 99) == "99"
