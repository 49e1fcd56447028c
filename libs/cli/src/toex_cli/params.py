"""Parsing of what people type: job names, dates, regions and enum values.

The pure functions raise ValueError with a message fit to show; the click parameter types turn
that into a usage error (exit code 2).
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time
from typing import Any

import click
from google.protobuf.descriptor import EnumDescriptor
from toex_kernel.regions import Region

_JOB_SEGMENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
END_OF_DAY = time(23, 59, 59, tzinfo=UTC)


def parse_job_name(text: str) -> str:
    """`regions/EMSOU/jobs/abc`, `EMSOU/jobs/abc` or the short `EMSOU/abc` (region in any case)."""
    parts = text.strip().strip("/").split("/")
    if len(parts) == 4 and parts[0] == "regions" and parts[2] == "jobs":
        region_text, job = parts[1], parts[3]
    elif len(parts) == 3 and parts[1] == "jobs":
        region_text, job = parts[0], parts[2]
    elif len(parts) == 2:
        region_text, job = parts
    else:
        raise ValueError(f"{text!r} is not a job name; write regions/EMSOU/jobs/JOB_ID or EMSOU/JOB_ID")
    region = Region.parse(region_text)
    if not _JOB_SEGMENT.match(job):
        raise ValueError(f"{job!r} is not a job id (letters, digits, '-' and '_', at most 64)")
    return f"regions/{region.value}/jobs/{job}"


def parse_when(text: str) -> datetime:
    """A date (`2026-12-01`, meaning the end of that day UTC) or an ISO datetime.

    A datetime without an offset is taken as UTC, so that scripts get the same answer on every
    machine.
    """
    value = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            day = date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid date: {exc}") from None
        return datetime.combine(day, END_OF_DAY)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a date or time; write 2026-12-01 (end of that day, UTC) "
            "or 2026-12-01T17:00:00+00:00"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC)


def enum_prefix(descriptor: EnumDescriptor) -> str:
    """`JobState` -> `JOB_STATE_`: the prefix protobuf style puts on every value."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", descriptor.name).upper() + "_"


def enum_short_name(descriptor: EnumDescriptor, number: int) -> str:
    """`JOB_STATE_RAISED` -> `RAISED`; an unknown number shows as itself."""
    value = descriptor.values_by_number.get(number)
    if value is None:
        return str(number)
    return value.name.removeprefix(enum_prefix(descriptor))


def enum_choices(descriptor: EnumDescriptor) -> dict[str, int]:
    """Lower-case short names to numbers, without the UNSPECIFIED value."""
    prefix = enum_prefix(descriptor)
    return {
        v.name.removeprefix(prefix).lower(): v.number
        for v in descriptor.values
        if v.number != 0 and not v.name.endswith("_UNSPECIFIED")
    }


def parse_enum(descriptor: EnumDescriptor, text: str) -> int:
    """`in_progress`, `IN-PROGRESS` or `JOB_STATE_IN_PROGRESS` to the enum number."""
    choices = enum_choices(descriptor)
    key = text.strip().upper().replace("-", "_").removeprefix(enum_prefix(descriptor)).lower()
    if key not in choices:
        raise ValueError(f"{text!r} is not one of: {', '.join(choices)}")
    return choices[key]


class _ParsedType(click.ParamType):
    def parse(self, value: str) -> Any:
        raise NotImplementedError

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        try:
            return self.parse(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class JobNameType(_ParsedType):
    """A job, regions/EMSOU/jobs/ID or EMSOU/ID. A command given `--job` works under it: with no
    --purpose given, the job is the purpose (what a job's assignee of another region needs to
    reach the job's material, and what the audit log then records)."""

    name = "job"

    def parse(self, value: str) -> str:
        return parse_job_name(value)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        job = super().convert(value, param, ctx)
        # `--job` says which job the work is for; a job named as what to read (`jobs show NAME`)
        # is not a reason for reading it.
        if job and ctx is not None and isinstance(param, click.Option):
            work_under(ctx, job)
        return job


def work_under(ctx: click.Context, job: str) -> None:
    """Make `job` the purpose of the command's calls, unless a purpose was given."""
    cli = ctx.obj  # the CliContext main() made, which every subcommand's context inherits
    if cli is not None and hasattr(cli, "purpose") and not cli.purpose:
        cli.purpose = job


class WhenType(_ParsedType):
    name = "date"

    def parse(self, value: str) -> datetime:
        return parse_when(value)


class RegionType(_ParsedType):
    """A region code in any case; with `allow_all`, `-` means every region you may see (None)."""

    name = "region"

    def __init__(self, allow_all: bool = False) -> None:
        self.allow_all = allow_all

    def parse(self, value: str) -> Region | None:
        if self.allow_all and value.strip() == "-":
            return None
        return Region.parse(value)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "CODE|-" if self.allow_all else "CODE"


class EnumType(_ParsedType):
    """A protobuf enum value by its short name, case-insensitive; converts to the number."""

    def __init__(self, descriptor: EnumDescriptor) -> None:
        self.descriptor = descriptor
        self.name = descriptor.name

    def parse(self, value: str) -> int:
        return parse_enum(self.descriptor, value)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(enum_choices(self.descriptor)) + "]"


JOB_NAME = JobNameType()
WHEN = WhenType()
