"""`toex national pack`: the national performance pack for a period, as an Excel workbook or a PDF.

The figures are the oversight service's (`GetOverview`, at the hub): one call for the regions in
scope and one per requesting force in scope (the API filters on one force at a time). Nothing is
computed here that the read model does not hold, except shares (on time / delivered).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import click
from toex.oversight.v1 import oversight_pb2 as pb
from toex.oversight.v1 import oversight_pb2_grpc
from toex.type.v1 import region_pb2
from toex_kernel.forces import FORCES, Force, ThreatCategory
from toex_kernel.regions import Region

from toex_cli.context import CliContext, pass_cli
from toex_cli.national import LONDON, SERVICE, _at_the_hub, national, parse_period
from toex_cli.params import RegionType

MARKING = "OFFICIAL-SENSITIVE"
THREAT_NOTE = (
    "Jobs by the threat category they name now; jobs naming none are in no column (raised minus categorised)."
)

Cell = str | int | float


@dataclass(frozen=True)
class Table:
    """One section of the pack: a sheet in the workbook, a table in the PDF."""

    name: str  # sheet name (at most 31 characters)
    title: str
    headers: Sequence[str]
    rows: Sequence[Sequence[Cell]]
    note: str = ""


@dataclass(frozen=True)
class Chart:
    """A bar chart of some columns of a table (categories from its first column)."""

    table: str
    title: str
    columns: Sequence[str]
    stacked: bool = False
    skip_last_row: bool = True  # the TOTAL row is not a bar


@dataclass
class Pack:
    period: pb.Period
    scope: str
    overview: pb.GetOverviewResponse
    forces: list[tuple[str, str, pb.RegionFigures]] = field(default_factory=list)
    made_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def notes(self) -> list[str]:
        return list(dict.fromkeys(self.overview.notes))


Ask = Callable[[pb.GetOverviewRequest], pb.GetOverviewResponse]


def forces_in_scope(region: Region | None, force: Force | None) -> list[Force]:
    if force is not None:
        return [force]
    if region is not None:
        return [f for f in Force if FORCES[f].region == region]
    return list(Force)


def gather(ask: Ask, period: pb.Period, region: Region | None, force: Force | None) -> Pack:
    """Ask the oversight service for the pack's figures: the regions (all you may see, or one),
    restricted to the force when one is named, then each force in scope on its own."""
    regions = [region.to_proto()] if region is not None else []
    force_code = force.code if force is not None else ""
    overview = ask(pb.GetOverviewRequest(period=period, regions=regions, force=force_code))  # type: ignore[arg-type]
    rows = []
    for each in forces_in_scope(region, force):
        answer = (
            overview
            if force is not None
            else ask(pb.GetOverviewRequest(period=period, regions=regions, force=each.code))  # type: ignore[arg-type]
        )
        rows.append((each.code, each.display_name, answer.total))
    if force is not None:
        scope = f"jobs requested by {force.display_name} ({force.code})"
    elif region is not None:
        scope = f"region {region.value} and its forces"
    else:
        scope = "every region you may see"
    return Pack(period=overview.period, scope=scope, overview=overview, forces=rows)


def _region(value: int) -> str:
    return region_pb2.Region.Name(value).removeprefix("REGION_") if value else "TOTAL"  # type: ignore[arg-type]


def _share(part: int, whole: int) -> Cell:
    return round(100.0 * part / whole, 1) if whole else "-"


def _job_row(label: str, jobs: pb.JobFigures) -> list[Cell]:
    delivered = jobs.delivered_on_time + jobs.delivered_late
    return [
        label,
        jobs.raised,
        jobs.open,
        jobs.overdue,
        jobs.delivered_on_time,
        jobs.delivered_late,
        _share(jobs.delivered_on_time, delivered),
        jobs.taken_by_other_regions,
        jobs.taken_for_other_regions,
        jobs.feedback.rated,
        round(jobs.feedback.mean_rating, 2) if jobs.feedback.rated else "-",
    ]


def _threat_row(label: str, jobs: pb.JobFigures) -> list[Cell]:
    counts: dict[int, int] = {int(t.threat_category): t.count for t in jobs.threats}
    return [label, *(counts.get(threat.to_proto(), 0) for threat in ThreatCategory), jobs.raised]


JOB_HEADERS = (
    "raised",
    "open",
    "overdue",
    "delivered on time",
    "delivered late",
    "on time %",
    "taken by other regions",
    "taken for other regions",
    "rated",
    "mean rating",
)

DEFINITIONS: tuple[tuple[str, str], ...] = (
    ("Period", "Europe/London days; jobs are counted by the day raised, referrals by the day drafted."),
    ("raised", "Jobs raised in the period."),
    ("open", "Jobs raised in the period that are open now (raised, assigned or in progress)."),
    ("overdue", "Jobs open now and past their due time."),
    ("delivered on time", "Jobs delivered by their due time."),
    ("delivered late", "Jobs delivered after their due time."),
    ("on time %", "delivered on time / (delivered on time + delivered late), as a percentage."),
    (
        "taken by other regions",
        "Jobs worked by a researcher of another region (tasking resilience), at any point.",
    ),
    (
        "taken for other regions",
        "Jobs of other regions, raised in the period, this region's researchers worked.",
    ),
    ("rated / mean rating", "Jobs the requesting officer rated (1 to 5) and the mean of those ratings."),
    ("States", "Jobs raised in the period by their state now."),
    ("Types", "Jobs raised in the period by type."),
    ("Priorities", "Jobs raised in the period by their priority now."),
    (
        "Taken across regions",
        "Jobs worked by another region, by the researchers' region (a job can count twice).",
    ),
    ("Feedback", "Jobs rated 1, 2, 3, 4 and 5."),
    ("referrals drafted", "Safeguarding referrals drafted in the period, by their state now."),
    ("clock met on time / late", "Referrals decided by / after their statutory due time."),
    ("clock due / overdue", "Referrals waiting, not yet due / past their statutory due time."),
    (
        "PND accepted / rejected / conflicts",
        "Submissions the PND accepted, refused or answered with a newer version.",
    ),
    (
        "PND reconciliation",
        "The newest reconciliation whatever the period: records in sync, held, stale, missing, "
        "rejected, in conflict (in the total, sums of the regions' newest).",
    ),
    ("deconfliction notices", "Notices that another region holds records on an entity the region holds."),
    ("By force", "The same job figures for jobs each requesting force asked for (GetOverview per force)."),
    ("Threat categories", THREAT_NOTE),
    ("commented", "Jobs whose latest feedback came with a comment (the comment itself stays in the region)."),
    ("Marking", f"The whole pack is {MARKING}; handle it accordingly."),
)


def tables(pack: Pack) -> list[Table]:
    """The pack's sections, in order; both renderers draw these."""
    ov = pack.overview
    rows = [*ov.regions, ov.total]
    states = ("raised", "assigned", "in_progress", "delivered", "closed", "declined", "cancelled")
    types = (
        "comms_analysis",
        "anpr",
        "intelligence_development",
        "open_source",
        "systems_checks",
        "safeguarding",
    )
    priorities = ("routine", "priority", "urgent")
    rstates = ("draft", "awaiting_approval", "approved", "submitted", "acknowledged", "decided", "closed")
    recon = ("local_records", "in_sync", "held", "stale", "missing", "rejected", "conflict")

    def words(name: str) -> str:
        return name.replace("_", " ")

    taken: list[list[Cell]] = [
        [_region(r.region), _region(t.region), t.count]
        for r in ov.regions
        for t in r.jobs.taken_by
        if t.count
    ]
    notices: list[list[Cell]] = [
        [_region(r.region), _region(t.region), t.count]
        for r in ov.regions
        for t in r.deconfliction.with_regions
        if t.count
    ]
    summary: list[list[Cell]] = [
        ["Period", f"{pack.period.first_day or 'start'} to {pack.period.last_day or 'now'}"],
        ["Scope", pack.scope],
        [
            "Figures as they stand at",
            ov.read_time.ToDatetime(UTC).isoformat() if ov.HasField("read_time") else "-",
        ],
        ["Pack made at", pack.made_at.isoformat(timespec="seconds")],
        ["Jobs raised", ov.total.jobs.raised],
        ["Jobs open", ov.total.jobs.open],
        ["Jobs overdue", ov.total.jobs.overdue],
        [
            "Delivered on time %",
            _share(
                ov.total.jobs.delivered_on_time,
                ov.total.jobs.delivered_on_time + ov.total.jobs.delivered_late,
            ),
        ],
        ["Referrals drafted", ov.total.referrals.drafted],
        ["Statutory clocks overdue", ov.total.referrals.clocks.overdue],
        ["Deconfliction notices", ov.total.deconfliction.notices],
        [
            "Jobs with a threat category",
            sum(t.count for t in ov.total.jobs.threats),
        ],
        ["Marking", MARKING],
    ]
    return [
        Table("Summary", "National performance pack", ["figure", "value"], summary),
        Table(
            "Jobs by region",
            "Jobs by region",
            ["region", *JOB_HEADERS],
            [_job_row(_region(r.region), r.jobs) for r in rows],
        ),
        Table(
            "Jobs by force",
            "Jobs by requesting force",
            ["force", "name", *JOB_HEADERS],
            [[code, name, *_job_row(code, figures.jobs)[1:]] for code, name, figures in pack.forces],
        ),
        Table(
            "States",
            "Jobs by state now",
            ["region", *map(words, states)],
            [[_region(r.region), *(getattr(r.jobs.states, s) for s in states)] for r in rows],
        ),
        Table(
            "Types",
            "Jobs by type",
            ["region", *map(words, types)],
            [[_region(r.region), *(getattr(r.jobs.types, t) for t in types)] for r in rows],
        ),
        Table(
            "Priorities",
            "Jobs by priority now",
            ["region", *priorities],
            [[_region(r.region), *(getattr(r.jobs.priorities, p) for p in priorities)] for r in rows],
        ),
        Table(
            "Taken across regions",
            "Jobs taken by other regions",
            ["region of the job", "region that worked it", "jobs"],
            taken,
            "" if taken else "No job in the period was worked by another region.",
        ),
        Table(
            "Feedback",
            "Requesting officers' ratings",
            ["region", "rated", "mean", "1", "2", "3", "4", "5", "commented"],
            [
                [
                    _region(r.region),
                    r.jobs.feedback.rated,
                    round(r.jobs.feedback.mean_rating, 2) if r.jobs.feedback.rated else "-",
                    *[*r.jobs.feedback.by_rating, 0, 0, 0, 0, 0][:5],
                    r.jobs.feedback.commented,
                ]
                for r in rows
            ],
        ),
        Table(
            "Referrals",
            "Safeguarding referrals and statutory clocks",
            [
                "region",
                "drafted",
                *map(words, rstates),
                "clock on time",
                "clock late",
                "clock due",
                "clock overdue",
            ],
            [
                [
                    _region(r.region),
                    r.referrals.drafted,
                    *(getattr(r.referrals.states, s) for s in rstates),
                    r.referrals.clocks.met_on_time,
                    r.referrals.clocks.met_late,
                    r.referrals.clocks.due,
                    r.referrals.clocks.overdue,
                ]
                for r in rows
            ],
        ),
        Table(
            "PND sync",
            "PND submissions and reconciliation",
            ["region", "accepted", "rejected", "conflicts", *map(words, recon)],
            [
                [
                    _region(r.region),
                    r.pnd.accepted,
                    r.pnd.rejected,
                    r.pnd.conflicts,
                    *(
                        getattr(r.pnd.reconciliation, c) if r.pnd.HasField("reconciliation") else "-"
                        for c in recon
                    ),
                ]
                for r in rows
            ],
        ),
        Table(
            "Deconfliction",
            "Deconfliction notices",
            ["region", "other region named", "notices"],
            [*notices, ["TOTAL", "", ov.total.deconfliction.notices]],
        ),
        Table(
            "Threat categories",
            "Jobs by threat category",
            ["region", *(threat.code for threat in ThreatCategory), "raised"],
            [_threat_row(_region(r.region), r.jobs) for r in rows],
            THREAT_NOTE,
        ),
        Table("Definitions", "Definitions", ["figure", "definition"], [list(d) for d in DEFINITIONS]),
        Table(
            "Notes", "Notes from the oversight service", ["note"], [[n] for n in pack.notes] or [["(none)"]]
        ),
    ]


CHARTS = (
    Chart("Jobs by region", "Jobs raised by region", ["raised"]),
    Chart(
        "Jobs by region",
        "Delivery against due dates by region",
        ["delivered on time", "delivered late"],
        stacked=True,
    ),
    Chart("Jobs by force", "Jobs raised by requesting force", ["raised"], skip_last_row=False),
)


def write_xlsx(pack: Pack, target: io.BufferedIOBase | str | Path) -> None:
    """One sheet per section, the marking in every sheet's header and footer and its first row,
    native Excel bar charts beside the region and force tables."""
    import xlsxwriter  # imported here: only the pack needs it

    book = xlsxwriter.Workbook(target, {"constant_memory": False, "in_memory": True})
    book.set_properties({"title": "National performance pack", "keywords": MARKING, "comments": MARKING})
    bold = book.add_format({"bold": True, "bg_color": "#DDDDDD", "text_wrap": True, "valign": "top"})
    marking = book.add_format({"bold": True, "font_color": "#C00000"})
    wrap = book.add_format({"text_wrap": True, "valign": "top"})
    header = f'&C&"-,Bold"{MARKING}'
    footer = f"&L{MARKING}&CPage &P of &N&R{pack.period.first_day} to {pack.period.last_day}"
    sheets = {}
    sections = tables(pack)
    for table in sections:
        sheet = book.add_worksheet(table.name[:31])
        sheets[table.name] = sheet
        sheet.set_header(header)
        sheet.set_footer(footer)
        sheet.write(0, 0, MARKING, marking)
        sheet.write(1, 0, table.title, book.add_format({"bold": True, "font_size": 13}))
        start = 3
        if table.note:
            sheet.write(2, 0, table.note, wrap)
        sheet.write_row(start, 0, list(table.headers), bold)
        for i, row in enumerate(table.rows, start=start + 1):
            sheet.write_row(i, 0, list(row))
        widths = [
            max([len(str(h)) for h in [table.headers[c], *(r[c] for r in table.rows)]] + [8])
            for c in range(len(table.headers))
        ]
        for c, width in enumerate(widths):
            sheet.set_column(c, c, min(width + 2, 60), wrap if table.name == "Definitions" else None)
        sheet.freeze_panes(start + 1, 1)
    by_name = {t.name: t for t in sections}
    for n, spec in enumerate(CHARTS):
        table = by_name[spec.table]
        count = len(table.rows) - (1 if spec.skip_last_row else 0)
        if count <= 0:
            continue
        chart = book.add_chart(
            {"type": "column", "subtype": "stacked"} if spec.stacked else {"type": "column"}
        )
        first, last = 4, 3 + count
        for column in spec.columns:
            c = list(table.headers).index(column)
            chart.add_series(
                {
                    "name": [table.name, 3, c],
                    "categories": [table.name, first, 0, last, 0],
                    "values": [table.name, first, c, last, c],
                }
            )
        chart.set_title({"name": spec.title})
        chart.set_legend({"position": "bottom" if len(spec.columns) > 1 else "none"})
        chart.set_size({"width": 720 if count < 20 else 1100, "height": 360})
        at = 5 + len(table.rows) + 15 * sum(1 for s in CHARTS[:n] if s.table == spec.table)
        sheets[spec.table].insert_chart(at, 0, chart)
    book.close()


def write_pdf(pack: Pack, path: str | Path) -> int:
    """A cover, each section as a table (split over pages), the charts; the marking at the top
    and bottom of every page. Returns the number of pages."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.backends.backend_pdf import PdfPages

    size = (11.69, 8.27)  # A4 landscape
    pages = 0

    def mark(fig: object) -> None:
        for y in (0.975, 0.015):
            fig.text(0.5, y, MARKING, ha="center", va="center", color="#C00000", weight="bold", fontsize=11)  # type: ignore[attr-defined]

    sections = tables(pack)
    by_name = {t.name: t for t in sections}
    with PdfPages(path, metadata={"Title": "National performance pack", "Subject": MARKING}) as pdf:
        fig = plt.figure(figsize=size)
        mark(fig)
        fig.text(0.5, 0.62, "National performance pack", ha="center", fontsize=26, weight="bold")
        fig.text(
            0.5,
            0.54,
            f"{pack.period.first_day or 'start'} to {pack.period.last_day or 'now'}",
            ha="center",
            fontsize=16,
        )
        fig.text(0.5, 0.48, pack.scope, ha="center", fontsize=13)
        fig.text(
            0.5,
            0.40,
            f"Made {pack.made_at:%Y-%m-%d %H:%M} UTC from the oversight service's figures",
            ha="center",
            fontsize=10,
        )
        fig.text(
            0.5, 0.30, "Sections: " + ", ".join(t.name for t in sections), ha="center", fontsize=9, wrap=True
        )
        pdf.savefig(fig)
        plt.close(fig)
        pages += 1
        for table in sections:
            per_page = 16 if table.name == "Definitions" else 22
            chunks = [table.rows[i : i + per_page] for i in range(0, max(len(table.rows), 1), per_page)] or [
                []
            ]
            for part, chunk in enumerate(chunks):
                fig = plt.figure(figsize=size)
                mark(fig)
                title = table.title + (f" ({part + 1} of {len(chunks)})" if len(chunks) > 1 else "")
                fig.text(0.04, 0.92, title, fontsize=15, weight="bold")
                if table.note:
                    fig.text(0.04, 0.88, table.note, fontsize=9, wrap=True)
                ax = fig.add_axes((0.04, 0.06, 0.92, 0.8))
                ax.axis("off")
                cells = [
                    [_wrap(str(v), 90 if table.name == "Definitions" else 40) for v in row] for row in chunk
                ]
                if cells:
                    shown = ax.table(
                        cellText=cells,
                        colLabels=[_wrap(h, 14) for h in table.headers],
                        loc="upper center",
                        cellLoc="left" if len(table.headers) <= 3 else "right",
                    )
                    shown.auto_set_font_size(False)
                    shown.set_fontsize(7 if len(table.headers) > 8 else 8)
                    shown.scale(1, 1.6 if table.name != "Definitions" else 2.2)
                    if len(table.headers) <= 3:
                        shown.auto_set_column_width(list(range(len(table.headers))))
                    for (r, _), cell in shown.get_celld().items():
                        if r == 0:
                            cell.set_facecolor("#DDDDDD")
                            cell.set_text_props(weight="bold")
                else:
                    ax.text(0, 0.9, "(no rows)", fontsize=10)
                pdf.savefig(fig)
                plt.close(fig)
                pages += 1
        for spec in CHARTS:
            table = by_name[spec.table]
            rows = list(table.rows[:-1] if spec.skip_last_row else table.rows)
            if not rows:
                continue
            fig = plt.figure(figsize=size)
            mark(fig)
            ax = fig.add_axes((0.07, 0.22, 0.9, 0.66))
            labels = [str(r[0]) for r in rows]
            bottom = [0.0] * len(rows)
            for column in spec.columns:
                c = list(table.headers).index(column)
                values = [float(r[c]) if isinstance(r[c], int | float) else 0.0 for r in rows]
                ax.bar(labels, values, bottom=bottom if spec.stacked else None, label=column)
                if spec.stacked:
                    bottom = [b + v for b, v in zip(bottom, values, strict=True)]
            ax.set_title(spec.title, fontsize=14, weight="bold")
            ax.tick_params(axis="x", labelrotation=70, labelsize=7 if len(rows) > 15 else 9)
            if len(spec.columns) > 1:
                ax.legend()
            pdf.savefig(fig)
            plt.close(fig)
            pages += 1
    return pages


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


@national.command("pack")
@click.option(
    "--period",
    required=True,
    metavar="PERIOD",
    help="The period: 2026-Q3, 2026-09 (a month), 2026 or 2026-07-01..2026-09-30. Europe/London days.",
)
@click.option("--region", type=RegionType(), default=None, help="One region and its forces only.")
@click.option(
    "--force", "force_code", default="", metavar="CODE", help="Jobs one requesting force asked for only."
)
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True),
    help="The file to write: .xlsx (Excel, with charts) or .pdf.",
)
@pass_cli
def pack_command(cli: CliContext, period: str, region: Region | None, force_code: str, output: str) -> None:
    """The national performance pack for a period (OFFICIAL-SENSITIVE): jobs per region and force,
    states, types, priorities, work taken across regions, delivery against due dates, ratings,
    referrals and statutory clocks, PND sync and deconfliction, with a sheet of definitions.

    \b
    Examples:
      toex --purpose "quarterly return" national pack --period 2026-Q3 -o pack.xlsx
      toex --purpose "force review" national pack --period 2026-09 --force NOTTS -o notts.pdf
    """
    suffix = Path(output).suffix.lower()
    if suffix not in (".xlsx", ".pdf"):
        raise click.BadParameter(f"{output!r}: write a .xlsx or a .pdf file", param_hint="-o/--output")
    chosen = parse_pack_period(period, datetime.now(UTC).astimezone(LONDON).date())
    force = None
    if force_code:
        try:
            force = Force.parse(force_code)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--force") from None
        if region is not None:
            raise click.UsageError("name a region or a force, not both")
    stub = oversight_pb2_grpc.OversightServiceStub(cli.channel(SERVICE))
    with _at_the_hub(cli):
        pack = gather(lambda request: cli.call(SERVICE, stub.GetOverview, request), chosen, region, force)
    if suffix == ".xlsx":
        write_xlsx(pack, output)
        click.echo(f"Wrote {output}: {len(tables(pack))} sheets, marked {MARKING}", err=True)
    else:
        pages = write_pdf(pack, output)
        click.echo(f"Wrote {output}: {pages} pages, marked {MARKING}", err=True)


def parse_pack_period(text: str, today: date) -> pb.Period:
    """A closed period for a pack: a quarter, a month, a year or a range with both ends."""
    value = text.strip()
    if value in ("", "all", "today") or value.endswith("d") or value.startswith("..") or value.endswith(".."):
        raise click.BadParameter(
            f"{text!r}: a pack covers a closed period; write 2026-Q3, 2026-09, 2026 or 2026-07-01..2026-09-30",
            param_hint="--period",
        )
    period = parse_period(value, today)
    if period.first_day > period.last_day:
        raise click.BadParameter(f"{text!r}: the period ends before it starts", param_hint="--period")
    return period


COMMANDS: tuple[click.Command, ...] = ()
