"""`toex national ...`: the national oversight service (every region's work in figures, at the hub)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import click
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.type.v1 import region_pb2
from toex_kernel.regions import Region

from toex_cli.context import CliContext, Endpoint, pass_cli
from toex_cli.output import JSON, emit_json, format_option, format_time, message_to_dict, render_table
from toex_cli.params import RegionType
from toex_cli.routing import PINNED

SERVICE = "oversight"
ENDPOINTS = (Endpoint(SERVICE, "127.0.0.1:50056", "The national oversight service (at the hub)"),)
LONDON = ZoneInfo("Europe/London")
_RANGE = re.compile(r"^(\d{4}-\d{2}-\d{2})?\.\.(\d{4}-\d{2}-\d{2})?$")
_DAYS = re.compile(r"^(\d{1,5})d$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_QUARTER = re.compile(r"^(\d{4})-[Qq]([1-4])$")
_YEAR = re.compile(r"^(\d{4})$")


def _month_end(year: int, month: int) -> date:
    following = date(year + month // 12, month % 12 + 1, 1)
    return following - timedelta(days=1)


def parse_period(text: str, today: date) -> pb.Period:
    """`all`, `today`, `30d` (the last 30 days, today included), `2026-03`, `2026-Q1`, `2026`,
    `2026-01-01..2026-03-31` (either end may be left out), or one day `2026-03-02`."""
    value = text.strip()
    try:
        if value in ("", "all"):
            return pb.Period()
        if value == "today":
            return pb.Period(first_day=today.isoformat(), last_day=today.isoformat())
        if found := _DAYS.match(value):
            days = int(found.group(1))
            if days < 1:
                raise ValueError("at least one day")
            return pb.Period(
                first_day=(today - timedelta(days=days - 1)).isoformat(), last_day=today.isoformat()
            )
        if found := _MONTH.match(value):
            year, month = int(found.group(1)), int(found.group(2))
            return pb.Period(
                first_day=date(year, month, 1).isoformat(), last_day=_month_end(year, month).isoformat()
            )
        if found := _QUARTER.match(value):
            year, quarter = int(found.group(1)), int(found.group(2))
            first_month = 3 * quarter - 2
            return pb.Period(
                first_day=date(year, first_month, 1).isoformat(),
                last_day=_month_end(year, first_month + 2).isoformat(),
            )
        if found := _YEAR.match(value):
            year = int(found.group(1))
            return pb.Period(first_day=date(year, 1, 1).isoformat(), last_day=date(year, 12, 31).isoformat())
        if found := _RANGE.match(value):
            first, last = found.group(1) or "", found.group(2) or ""
            for day in (first, last):
                if day:
                    date.fromisoformat(day)
            return pb.Period(first_day=first, last_day=last)
        date.fromisoformat(value)
        return pb.Period(first_day=value, last_day=value)
    except ValueError:
        pass
    raise click.BadParameter(
        f"{text!r} is not a period; write all, today, 30d, 2026-03, 2026-Q1, 2026, "
        "2026-01-01..2026-03-31 or a day",
        param_hint="--period",
    )


@contextlib.contextmanager
def _at_the_hub(cli: CliContext) -> Iterator[None]:
    """With a directory of installations, the figures are asked of the installation serving the
    national team (the hub), whatever region the login is in."""
    hub = None
    if cli.routes(SERVICE) and cli.directory is not None:
        hub = cli.directory.serving(Region.NATIONAL)
    token = PINNED.set(hub) if hub is not None else None
    try:
        yield
    finally:
        if token is not None:
            PINNED.reset(token)


def _region_name(value: int) -> str:
    return region_pb2.Region.Name(value).removeprefix("REGION_") if value else "TOTAL"  # type: ignore[arg-type]


def _rating(feedback: pb.Feedback) -> str:
    return f"{feedback.mean_rating:.1f} ({feedback.rated})" if feedback.rated else "-"


def _latest(figures: pb.RegionFigures) -> str:
    return format_time(figures.latest_event_time) if figures.HasField("latest_event_time") else "-"


def render_overview(answer: pb.GetOverviewResponse) -> str:
    rows = [*answer.regions, answer.total]
    jobs = render_table(
        [
            "region",
            "raised",
            "open",
            "overdue",
            "on time",
            "late",
            "taken by others",
            "taken for others",
            "rating",
        ],
        [
            [
                _region_name(r.region),
                str(r.jobs.raised),
                str(r.jobs.open),
                str(r.jobs.overdue),
                str(r.jobs.delivered_on_time),
                str(r.jobs.delivered_late),
                str(r.jobs.taken_by_other_regions),
                str(r.jobs.taken_for_other_regions),
                _rating(r.jobs.feedback),
            ]
            for r in rows
        ],
    )
    others = render_table(
        [
            "region",
            "referrals",
            "clocks on time",
            "late",
            "due",
            "overdue",
            "pnd accepted",
            "rejected",
            "held",
            "stale",
            "deconfliction",
            "latest event",
        ],
        [
            [
                _region_name(r.region),
                str(r.referrals.drafted),
                str(r.referrals.clocks.met_on_time),
                str(r.referrals.clocks.met_late),
                str(r.referrals.clocks.due),
                str(r.referrals.clocks.overdue),
                str(r.pnd.accepted),
                str(r.pnd.rejected),
                str(r.pnd.reconciliation.held) if r.pnd.HasField("reconciliation") else "-",
                str(r.pnd.reconciliation.stale) if r.pnd.HasField("reconciliation") else "-",
                str(r.deconfliction.notices),
                _latest(r),
            ]
            for r in rows
        ],
    )
    heading = (
        f"Jobs raised and referrals drafted {answer.period.first_day} to {answer.period.last_day} "
        f"(Europe/London days), as they stand at {format_time(answer.read_time)}"
        + (f"; jobs of force {answer.force} only" if answer.force else "")
    )
    return "\n\n".join([heading, "JOBS", jobs, "REFERRALS, PND AND DECONFLICTION", others])


@click.group()
def national() -> None:
    """The national team's figures of every region's work, from the hub (no personal data).

    \b
    Examples:
      toex --purpose "quarterly return" national overview --period 2026-Q1
      toex --purpose "weekly review" national overview --period 7d --region EMSOU --region LONDON
      toex --purpose "force review" national overview --force LEICS --format json
    """


@national.command("overview")
@click.option(
    "--period",
    default="all",
    show_default=True,
    metavar="PERIOD",
    help="The days counted (jobs by the day raised, referrals by the day drafted): all, today, 30d, "
    "2026-03, 2026-Q1, 2026, 2026-01-01..2026-03-31 or one day. Europe/London days.",
)
@click.option(
    "--region",
    "regions",
    type=RegionType(),
    multiple=True,
    help="A region to answer for (repeat for more); default: every region you may see.",
)
@click.option("--force", default="", metavar="CODE", help="Count only jobs this requesting force asked for.")
@format_option
@pass_cli
def overview(
    cli: CliContext, period: str, regions: tuple[Region, ...], force: str, output_format: str
) -> None:
    """Jobs, referrals, PND sync and deconfliction per region, with the total.

    National coordinators and the national team see every region; a region's supervisor sees
    their own. The JSON form has every figure (states, types, priorities, ratings, regions that
    took jobs, the PND reconciliation); the table the main ones.
    """
    request = pb.GetOverviewRequest(
        period=parse_period(period, datetime.now(UTC).astimezone(LONDON).date()),
        regions=[r.to_proto() for r in dict.fromkeys(regions)],  # type: ignore[misc]
        force=force,
    )
    stub = oversight_pb2_grpc.OversightServiceStub(cli.channel(SERVICE))
    with _at_the_hub(cli):
        answer = cli.call(SERVICE, stub.GetOverview, request)
    if output_format == JSON:
        emit_json(message_to_dict(answer))
        return
    click.echo(render_overview(answer))
    for note in answer.notes:
        click.echo(f"Note: {note}", err=True)


COMMANDS = (national,)
