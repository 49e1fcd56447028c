"""`toex jobs ...`: the tasking service (intelligence jobs raised by regions and the national team)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime

import click
from google.protobuf import field_mask_pb2
from toex.tasking.v1 import tasking_pb2 as pb
from toex.tasking.v1 import tasking_pb2_grpc
from toex.type.v1 import region_pb2, security_pb2
from toex_kernel.forces import FORCES, THREATS, Force, ThreatCategory
from toex_kernel.regions import Region
from toex_kernel.timestamps import timestamp as _timestamp

from toex_cli.context import CliContext, Endpoint, pass_cli
from toex_cli.output import (
    emit_list,
    emit_one,
    format_option,
    format_time,
    message_to_dict,
    render_fields,
    render_table,
)
from toex_cli.params import JOB_NAME, WHEN, EnumType, RegionType, enum_short_name, work_under

SERVICE = "tasking"
ENDPOINTS = (Endpoint(SERVICE, "127.0.0.1:50051", "The tasking service"),)
MAX_PAGE_SIZE = 500

JOB_TYPE = EnumType(pb.JobType.DESCRIPTOR)
PRIORITY = EnumType(pb.Priority.DESCRIPTOR)
JOB_STATE = EnumType(pb.JobState.DESCRIPTOR)
HANDLING = {"P": security_pb2.HANDLING_CODE_P, "C": security_pb2.HANDLING_CODE_C}

# Where a server-side field violation came from on the command line.
CREATE_FIELDS = {
    "parent": "--region",
    "job.requesting_unit": "--unit",
    "job.requesting_officer": "--officer",
    "job.operation_name": "--operation",
    "job.job_type": "--type",
    "job.priority": "--priority",
    "job.due_time": "--due",
    "job.description": "--description",
    "job.handling": "--handling",
    "job.subject_entity_ids": "--subject",
    "job.collaborating_regions": "--collaborating-region",
    "collaborating_regions": "--collaborating-region",
    "job.requesting_force": "--force",
    "job.threat_category": "--threat",
    "request_id": "--request-id",
}
UPDATE_FIELDS = {
    "job.name": "NAME",
    "update_mask": "the options given",
    "job.due_time": "--due",
    "job.priority": "--priority",
    "job.subject_entity_ids": "--subject",
    "job.description": "--description",
    "job.collaborating_regions": "--collaborating-region",
    "job.requesting_force": "--force",
    "job.threat_category": "--threat",
    "request_id": "--request-id",
}


class ForceType(click.ParamType):
    """A requesting force by its short code (NOTTS, MET, BTP, NCA...), case-insensitive."""

    name = "force"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> Force:
        if isinstance(value, Force):
            return value
        try:
            return Force.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "CODE"


class ThreatType(click.ParamType):
    """A threat category by its short code (cse, cce, ms-sexual, ...), case-insensitive."""

    name = "threat"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> ThreatCategory:
        if isinstance(value, ThreatCategory):
            return value
        try:
            return ThreatCategory.parse(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)

    def get_metavar(self, param: click.Parameter, ctx: click.Context | None = None) -> str:
        return "[" + "|".join(code for code, _ in THREATS.values()) + "]"


FORCE = ForceType()
THREAT = ThreatType()
_FORCE_HELP = "The requesting force's code, e.g. NOTTS, MET, BTP, NCA (`toex jobs forces` lists them)."
_THREAT_HELP = (
    "The threat category: " + ", ".join(f"{code} ({name})" for code, name in THREATS.values()) + "."
)


def force_label(value: int) -> str:
    """`NOTTS (Nottinghamshire Police)` for a Force number; empty when unset."""
    if not value:
        return ""
    try:
        force = Force.from_proto(value)
    except ValueError:
        return str(value)
    return f"{force.code} ({force.display_name})"


def threat_label(value: int) -> str:
    if not value:
        return ""
    try:
        threat = ThreatCategory.from_proto(value)
    except ValueError:
        return str(value)
    return f"{threat.code} ({threat.display_name})"


def _stub(cli: CliContext) -> tasking_pb2_grpc.TaskingServiceStub:
    return tasking_pb2_grpc.TaskingServiceStub(cli.channel(SERVICE))


def _region(value: int) -> str:
    return enum_short_name(region_pb2.Region.DESCRIPTOR, value) if value else ""


def _due(job: pb.Job) -> str:
    due = format_time(job.due_time)
    return f"{due} OVERDUE" if due and job.overdue else due


def job_row(job: pb.Job) -> list[str]:
    return [
        job.name,
        enum_short_name(pb.JobState.DESCRIPTOR, job.state),
        enum_short_name(pb.JobType.DESCRIPTOR, job.job_type).lower(),
        enum_short_name(pb.Priority.DESCRIPTOR, job.priority).lower(),
        _due(job),
        ",".join(a.username for a in job.assignees),
        job.operation_name,
    ]


JOB_COLUMNS = ["name", "state", "type", "priority", "due", "assignees", "operation"]


def render_jobs(jobs: Sequence[pb.Job]) -> str:
    return render_table(JOB_COLUMNS, [job_row(job) for job in jobs])


def _words(code: str) -> str:
    """`CHILD_SEXUAL_EXPLOITATION` -> `child sexual exploitation`."""
    return code.replace("_", " ").lower()


def render_linked_referrals(referrals: Sequence[pb.LinkedReferral]) -> str:
    """Each referral on a line (name, state, concerns, risk, handling, last change), then its
    changes, oldest first, indented. They name the referral, never its subject: reading the
    referral is `toex referrals get`, with a purpose."""
    lines = []
    for r in referrals:
        about = ", ".join(_words(c) for c in r.concerns)
        parts = [r.referral, r.state or "state unknown"]
        if about:
            parts.append(about)
        if r.risk_level:
            parts.append(f"risk {_words(r.risk_level)}")
        if r.handling:
            parts.append(f"handling {enum_short_name(security_pb2.HandlingCode.DESCRIPTOR, r.handling)}")
        parts.append(f"updated {format_time(r.update_time)}")
        lines.append("  ".join(parts))
        lines.extend(f"  {format_time(c.occur_time)} {c.summary}" for c in r.changes)
    return "\n".join(lines)


def render_job(job: pb.Job) -> str:
    assignees = "\n".join(
        f"{a.username} ({_region(a.region)}, since {format_time(a.assign_time)})" for a in job.assignees
    )
    notes = "\n".join(f"{format_time(n.create_time)} {n.author}: {n.text}" for n in job.notes)
    feedback = ""
    if job.HasField("feedback"):
        fb = job.feedback
        feedback = f"{fb.rating}/5 {fb.comment}".strip() + f" (recorded by {fb.recorded_by})"
        if fb.officer_name:
            feedback += f", officer: {fb.officer_name}"
    handling = enum_short_name(security_pb2.HandlingCode.DESCRIPTOR, job.handling) if job.handling else ""
    return render_fields(
        [
            ("name", job.name),
            ("state", enum_short_name(pb.JobState.DESCRIPTOR, job.state)),
            ("type", enum_short_name(pb.JobType.DESCRIPTOR, job.job_type).lower()),
            ("priority", enum_short_name(pb.Priority.DESCRIPTOR, job.priority).lower()),
            ("due", _due(job)),
            ("region", _region(job.owning_region)),
            ("handling", handling),
            ("operation", job.operation_name),
            ("force", force_label(job.requesting_force)),
            ("threat", threat_label(job.threat_category)),
            ("unit", job.requesting_unit),
            ("officer", job.requesting_officer),
            ("description", job.description),
            ("subjects", ", ".join(job.subject_entity_ids)),
            ("collaborating", ", ".join(_region(r) for r in job.collaborating_regions)),
            ("assignees", assignees),
            ("product", job.product),
            ("feedback", feedback),
            ("notes", notes),
            ("referrals", render_linked_referrals(job.linked_referrals)),
            ("created", f"{format_time(job.create_time)} by {job.created_by}" if job.created_by else ""),
            ("updated", format_time(job.update_time)),
        ]
    )


def _print_job(job: pb.Job, output_format: str) -> None:
    emit_one(output_format, job, lambda: render_job(job))


@click.group(name="jobs", short_help="Intelligence jobs: the tasking service.")
def jobs() -> None:
    """Intelligence jobs: raise, list, assign and work them (the tasking service).

    Job names look like regions/EMSOU/jobs/JOB_ID; everywhere a NAME is asked for, EMSOU/JOB_ID
    is accepted too. Reads need a purpose: toex --purpose "Op NAME" jobs ...

    \b
    Examples:
      toex --purpose "Op Kestrel" jobs list --region EMSOU --state raised
      toex jobs create --region EMSOU --type comms_analysis --unit "Leicestershire Police" \\
          --officer "DS Smith" --operation "Op Kestrel" --due 2026-12-01
      toex jobs update EMSOU/8f14e45f --due 2026-12-15 --priority urgent
    """


def _request_id_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--request-id",
        default="",
        metavar="ID",
        help="Idempotency key (a UUID): repeating the command with the same key returns the first answer.",
    )(func)


def _collaborating_region_option(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--collaborating-region",
        "collaborating",
        type=RegionType(),
        multiple=True,
        help="A region collaborating on the job (its supervisors see the job read-only); repeat for several.",
    )(func)


@jobs.command("create")
@click.option("--region", required=True, type=RegionType(), help="The region that owns the job.")
@click.option("--type", "job_type", required=True, type=JOB_TYPE, help="What kind of support is asked for.")
@click.option("--unit", required=True, help='The requesting force or unit, e.g. "Leicestershire Police".')
@click.option("--officer", required=True, help='The requesting officer, e.g. "DS Smith".')
@click.option("--operation", required=True, help="The operation the job supports.")
@click.option(
    "--due",
    required=True,
    type=WHEN,
    help="When the product is due: a date (end of that day, UTC) or an ISO datetime.",
)
@click.option("--priority", type=PRIORITY, default="routine", show_default=True, help="How urgent it is.")
@click.option(
    "--handling",
    type=click.Choice(sorted(HANDLING), case_sensitive=False),
    metavar="[P|C]",
    help="Handling code of the material: P (lawful sharing) or C (with conditions, the default).",
)
@click.option("--description", default="", help="What is asked for.")
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    metavar="ENTITY_ID",
    help="A linked subject's entity id; repeat for several.",
)
@click.option("--force", "force", type=FORCE, help=_FORCE_HELP)
@click.option("--threat", "threat", type=THREAT, help=_THREAT_HELP)
@_collaborating_region_option
@_request_id_option
@format_option
@pass_cli
def create(
    cli: CliContext,
    region: Region,
    job_type: int,
    unit: str,
    officer: str,
    operation: str,
    due: datetime,
    priority: int,
    handling: str | None,
    description: str,
    subjects: tuple[str, ...],
    force: Force | None,
    threat: ThreatCategory | None,
    collaborating: tuple[Region, ...],
    request_id: str,
    output_format: str,
) -> None:
    """Raise a new job in a region and print it.

    --force and --threat record what the products group by (the requesting force, from the
    code list, and the threat category); --unit keeps the unit's own name.

    Collaborating regions (an operation across regions) let their supervisors see the job,
    read-only; the owning region and national coordinators manage it.

    \b
    Examples:
      toex jobs create --region EMSOU --type comms_analysis --unit "Leicestershire Police" \\
          --officer "DS Smith" --operation "Op Kestrel" --due 2026-12-01 --force LEICS --threat cce
      toex jobs create --region ERSOU --type anpr --unit "Essex Police" --officer "DC Jones" \\
          --operation "Op Heron" --due 2026-11-20T17:00:00+00:00 --priority urgent --handling P \\
          --subject ent-123 --subject ent-456 --request-id "$(uuidgen)"
      toex jobs create --region EMSOU --type intelligence_development --unit "Derbyshire Constabulary" \\
          --officer "DI Patel" --operation "Op Sandpiper" --due 2026-12-20 --collaborating-region LONDON
    """
    job = pb.Job(
        requesting_unit=unit,
        requesting_officer=officer,
        operation_name=operation,
        job_type=job_type,  # type: ignore[arg-type]
        priority=priority,  # type: ignore[arg-type]
        due_time=_timestamp(due),
        description=description,
        subject_entity_ids=list(subjects),
        collaborating_regions=[r.to_proto() for r in collaborating],  # type: ignore[misc]
    )
    if handling:
        job.handling = HANDLING[handling.upper()]
    if force is not None:
        job.requesting_force = force.to_proto()  # type: ignore[assignment]
    if threat is not None:
        job.threat_category = threat.to_proto()  # type: ignore[assignment]
    request = pb.CreateJobRequest(parent=f"regions/{region.value}", job=job, request_id=request_id)
    response = cli.call(SERVICE, _stub(cli).CreateJob, request, field_options=CREATE_FIELDS)
    _print_job(response.job, output_format)


@jobs.command("list")
@click.option(
    "--region",
    type=RegionType(allow_all=True),
    default="-",
    show_default=True,
    help="Only this region's jobs; - for every region you may see.",
)
@click.option("--state", "states", type=JOB_STATE, multiple=True, help="Only jobs in this state; repeatable.")
@click.option("--assignee", default="", metavar="USER", help="Only jobs assigned to this login name.")
@click.option("--due-before", type=WHEN, help="Only jobs due before this date (end of day, UTC) or time.")
@click.option("--force", "force", type=FORCE, help="Only jobs requested by this force (its code).")
@click.option("--threat", "threat", type=THREAT, help="Only jobs about this threat category.")
@click.option(
    "--limit",
    type=click.IntRange(1, MAX_PAGE_SIZE),
    default=50,
    show_default=True,
    help="Jobs per page; without --all, the most shown.",
)
@click.option("--all", "fetch_all", is_flag=True, help="Follow every page, not just the first.")
@click.option(
    "--page-token", default="", metavar="TOKEN", help="Continue from a previous JSON next_page_token."
)
@format_option
@pass_cli
def list_jobs(
    cli: CliContext,
    region: Region | None,
    states: tuple[int, ...],
    assignee: str,
    due_before: datetime | None,
    force: Force | None,
    threat: ThreatCategory | None,
    limit: int,
    fetch_all: bool,
    page_token: str,
    output_format: str,
) -> None:
    """List the jobs you may see, newest first.

    With a directory of installations (`toex installations --help`), --region - asks every
    installation at once and merges their jobs, newest first; a region whose installation did
    not answer gets a line on standard error, and the exit code is 3.

    \b
    Examples:
      toex --purpose "Op Kestrel" jobs list
      toex --purpose "Op Kestrel" jobs list --region EMSOU --state raised --state assigned
      toex --purpose "capacity review" jobs list --assignee researcher.london --due-before 2026-12-01
      toex --purpose "performance return" jobs list --force NOTTS --threat cce
      toex --purpose "weekly return" jobs list --all --format json | jq '.jobs[].name'
    """
    if region is None and page_token and cli.routes(SERVICE):
        raise click.UsageError(
            "--page-token continues one installation's list: give --region CODE with it "
            "(--region - asks every installation; add --all for every page)"
        )

    def fetch() -> tuple[list[pb.Job], str]:
        request = pb.ListJobsRequest(
            parent=f"regions/{region.value if region else '-'}",
            states=list(states),  # type: ignore[arg-type]
            assignee=assignee,
            page_size=limit,
            page_token=page_token,
            requesting_force=force.to_proto() if force else 0,  # type: ignore[arg-type]
            threat_category=threat.to_proto() if threat else 0,  # type: ignore[arg-type]
        )
        if due_before is not None:
            request.due_before.CopyFrom(_timestamp(due_before))
        stub = _stub(cli)
        found: list[pb.Job] = []
        while True:
            response = cli.call(SERVICE, stub.ListJobs, request)
            found.extend(response.jobs)
            if not (fetch_all and response.next_page_token):
                break
            request.page_token = response.next_page_token
        return found, "" if fetch_all else response.next_page_token

    if region is not None:
        found, next_token = fetch()
        _emit_jobs(output_format, found, next_token, limit)
        return
    gathered = cli.gather(SERVICE, fetch)
    if not gathered.fanned_out:
        [(found, next_token)] = gathered.values()
        _emit_jobs(output_format, found, next_token, limit)
        return
    # Newest first across installations (as each lists its own); a job two installations both
    # return (one installation listed under two names) once.
    merged = {job.name: job for jobs_found, _ in gathered.values() for job in jobs_found}
    ordered = sorted(merged.values(), key=_newest_first, reverse=True)
    shown = ordered if fetch_all else ordered[:limit]
    more = [i.name for i, (_, token) in gathered.answers if token and i is not None]
    if len(shown) < len(ordered):
        more = more or ["the installations together"]
    emit_list(
        output_format,
        gathered.json(message_to_dict(pb.ListJobsResponse(jobs=shown))),
        JOB_COLUMNS,
        (job_row(job) for job in shown),
        empty="No jobs match.",
        note=f"More jobs match ({', '.join(more)}): add --all to see every page (or raise --limit, now {limit})."
        if more
        else "",
    )
    gathered.finish()


def _newest_first(job: pb.Job) -> tuple[int, int, str]:
    return (job.create_time.seconds, job.create_time.nanos, job.name)


def _emit_jobs(output_format: str, found: list[pb.Job], next_token: str, limit: int) -> None:
    emit_list(
        output_format,
        pb.ListJobsResponse(jobs=found, next_page_token=next_token),
        JOB_COLUMNS,
        (job_row(job) for job in found),
        empty="No jobs match.",
        note=f"More jobs match: add --all to see every page (or raise --limit, now {limit})."
        if next_token
        else "",
    )


@jobs.command("show")
@click.argument("name", type=JOB_NAME)
@format_option
@pass_cli
def show(cli: CliContext, name: str, output_format: str) -> None:
    """Show one job in full, with its notes, feedback and the safeguarding referrals linked to it
    (each with its state and its changes: drafted, approved, sent, overdue, decided, closed).

    \b
    Examples:
      toex --purpose "Op Kestrel" jobs show regions/EMSOU/jobs/8f14e45f
      toex --purpose "Op Kestrel" jobs show EMSOU/8f14e45f --format json
    """
    response = cli.call(SERVICE, _stub(cli).GetJob, pb.GetJobRequest(name=name))
    _print_job(response.job, output_format)


@jobs.command("update")
@click.argument("name", type=JOB_NAME)
@click.option("--due", type=WHEN, help="New due time: a date (end of that day, UTC) or an ISO datetime.")
@click.option("--priority", type=PRIORITY, help="New priority.")
@click.option(
    "--subject",
    "subjects",
    multiple=True,
    metavar="ENTITY_ID",
    help="The linked subjects' entity ids, replacing the job's; repeat for several.",
)
@click.option("--clear-subjects", is_flag=True, help="Remove every linked subject.")
@click.option("--description", help="New description of what is asked for.")
@_collaborating_region_option
@click.option(
    "--clear-collaborating-regions", is_flag=True, help="No region collaborates on the job any more."
)
@click.option("--force", "force", type=FORCE, help="New requesting force (its code).")
@click.option("--threat", "threat", type=THREAT, help="New threat category.")
@_request_id_option
@format_option
@pass_cli
def update(
    cli: CliContext,
    name: str,
    due: datetime | None,
    priority: int | None,
    subjects: tuple[str, ...],
    clear_subjects: bool,
    description: str | None,
    collaborating: tuple[Region, ...],
    clear_collaborating_regions: bool,
    force: Force | None,
    threat: ThreatCategory | None,
    request_id: str,
    output_format: str,
) -> None:
    """Change an open job: only what the options name changes (the owning region's supervisor
    or a national coordinator).

    --subject and --collaborating-region replace the whole list. After a new --due, the
    overdue notice goes out again if the new time passes. Collaborating regions' supervisors
    see the job read-only.

    \b
    Examples:
      toex jobs update EMSOU/8f14e45f --due 2026-12-15
      toex jobs update EMSOU/8f14e45f --priority urgent --description "Add ANPR for the two vans"
      toex jobs update EMSOU/8f14e45f --subject ent-123 --subject ent-789
      toex jobs update EMSOU/8f14e45f --collaborating-region LONDON --collaborating-region ERSOU
      toex jobs update EMSOU/8f14e45f --clear-collaborating-regions --request-id "$(uuidgen)"
      toex jobs update EMSOU/8f14e45f --force DERBYS --threat ms-labour
    """
    if subjects and clear_subjects:
        raise click.UsageError("give --subject or --clear-subjects, not both")
    if collaborating and clear_collaborating_regions:
        raise click.UsageError("give --collaborating-region or --clear-collaborating-regions, not both")
    job = pb.Job(name=name)
    paths = []
    if due is not None:
        job.due_time.CopyFrom(_timestamp(due))
        paths.append("due_time")
    if priority is not None:
        job.priority = priority  # type: ignore[assignment]
        paths.append("priority")
    if subjects or clear_subjects:
        job.subject_entity_ids.extend(subjects)
        paths.append("subject_entity_ids")
    if description is not None:
        job.description = description
        paths.append("description")
    if collaborating or clear_collaborating_regions:
        job.collaborating_regions.extend(r.to_proto() for r in collaborating)  # type: ignore[misc]
        paths.append("collaborating_regions")
    if force is not None:
        job.requesting_force = force.to_proto()  # type: ignore[assignment]
        paths.append("requesting_force")
    if threat is not None:
        job.threat_category = threat.to_proto()  # type: ignore[assignment]
        paths.append("threat_category")
    if not paths:
        raise click.UsageError(
            "say what changes: --due, --priority, --subject, --clear-subjects, --description, "
            "--collaborating-region, --clear-collaborating-regions, --force or --threat"
        )
    request = pb.UpdateJobRequest(
        job=job, update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=request_id
    )
    response = cli.call(SERVICE, _stub(cli).UpdateJob, request, field_options=UPDATE_FIELDS)
    _print_job(response.job, output_format)


@jobs.command("assign")
@click.argument("name", type=JOB_NAME)
@click.argument("users", nargs=-1, required=True, metavar="USER [USER...]")
@_request_id_option
@format_option
@pass_cli
def assign(cli: CliContext, name: str, users: tuple[str, ...], request_id: str, output_format: str) -> None:
    """Assign researchers to a job (RAISED becomes ASSIGNED).

    A supervisor assigns researchers of the owning region (to hand the job to another region's
    researcher, use reassign); a national coordinator assigns researchers of any region.

    \b
    Examples:
      toex jobs assign EMSOU/8f14e45f researcher.emsou
      toex jobs assign regions/EMSOU/jobs/8f14e45f researcher.emsou
      toex jobs assign EMSOU/8f14e45f researcher.london researcher.tarian   # national coordinator
    """
    request = pb.AssignJobRequest(name=name, assignees=list(users), request_id=request_id)
    response = cli.call(SERVICE, _stub(cli).AssignJob, request, field_options={"assignees": "USER"})
    _print_job(response.job, output_format)


@jobs.command("reassign")
@click.argument("name", type=JOB_NAME)
@click.argument("user")
@click.option("--reason", required=True, help="Why the job moves (recorded on the job and the event).")
@_request_id_option
@format_option
@pass_cli
def reassign(cli: CliContext, name: str, user: str, reason: str, request_id: str, output_format: str) -> None:
    """Hand a job to a researcher of any region (tasking resilience); the owning region stays.

    \b
    Example:
      toex jobs reassign EMSOU/8f14e45f researcher.london --reason "EMSOU at capacity this week"
    """
    request = pb.ReassignJobRequest(name=name, assignee=user, reason=reason, request_id=request_id)
    response = cli.call(
        SERVICE, _stub(cli).ReassignJob, request, field_options={"assignee": "USER", "reason": "--reason"}
    )
    _print_job(response.job, output_format)


@jobs.command("status")
@click.argument("name", type=JOB_NAME)
@click.argument("state", type=JOB_STATE)
@click.option("--reason", default="", help="Why (needed for declined and cancelled).")
@click.option("--product", default="", help="What was delivered (needed for delivered).")
@_request_id_option
@format_option
@pass_cli
def status(
    cli: CliContext, name: str, state: int, reason: str, product: str, request_id: str, output_format: str
) -> None:
    """Move a job along its lifecycle.

    RAISED -> ASSIGNED -> IN_PROGRESS -> DELIVERED -> CLOSED; DECLINED from RAISED or ASSIGNED;
    CANCELLED from any open state. STATE is case-insensitive (in_progress, in-progress).

    \b
    Examples:
      toex jobs status EMSOU/8f14e45f in_progress
      toex jobs status EMSOU/8f14e45f delivered --product "Comms analysis report, ref CA-2026-114"
      toex jobs status EMSOU/8f14e45f declined --reason "No lawful basis for the request"
    """
    request = pb.UpdateJobStatusRequest(
        name=name,
        state=state,  # type: ignore[arg-type]
        reason=reason,
        product=product,
        request_id=request_id,
    )
    response = cli.call(
        SERVICE,
        _stub(cli).UpdateJobStatus,
        request,
        field_options={"state": "STATE", "reason": "--reason", "product": "--product"},
    )
    _print_job(response.job, output_format)
    _tell_feedback_code(response)


def feedback_code(job_name: str, token: str) -> str:
    """What the requesting officer is given: the job (EMSOU/ID) and the one-time token."""
    return f"{job_name.removeprefix('regions/').replace('/jobs/', '/')}:{token}"


def _tell_feedback_code(response: pb.UpdateJobStatusResponse) -> None:
    """On delivery: the requesting officer's one-time feedback code, on standard error (a
    notifier sends it from the FeedbackRequested event; here the deliverer passes it on)."""
    if not response.feedback_token:
        return
    code = feedback_code(response.job.name, response.feedback_token)
    click.echo(
        f"Feedback code for the requesting officer ({response.job.requesting_officer or 'not recorded'}); "
        f"it works once, until {format_time(response.feedback_token_expire_time)}, and needs no login:\n"
        f'  toex jobs feedback --token {code} --score 1-5 --comment "..."',
        err=True,
    )


@jobs.command("deliver")
@click.argument("name", type=JOB_NAME)
@click.option("--product", required=True, help="What was delivered, e.g. a report reference.")
@_request_id_option
@format_option
@pass_cli
def deliver(cli: CliContext, name: str, product: str, request_id: str, output_format: str) -> None:
    """Deliver a job (IN_PROGRESS -> DELIVERED) and print the requesting officer's one-time
    feedback code on standard error: pass it to the officer, who records feedback with
    `toex jobs feedback --token CODE` without a toex account.

    \b
    Example:
      toex jobs deliver EMSOU/8f14e45f --product "Comms analysis report, ref CA-2026-114"
    """
    request = pb.UpdateJobStatusRequest(
        name=name, state=pb.JOB_STATE_DELIVERED, product=product, request_id=request_id
    )
    response = cli.call(SERVICE, _stub(cli).UpdateJobStatus, request, field_options={"product": "--product"})
    _print_job(response.job, output_format)
    _tell_feedback_code(response)


@jobs.command("note")
@click.argument("name", type=JOB_NAME)
@click.argument("text")
@_request_id_option
@format_option
@pass_cli
def note(cli: CliContext, name: str, text: str, request_id: str, output_format: str) -> None:
    """Add a note to a job. TEXT - reads the note from standard input.

    \b
    Examples:
      toex jobs note EMSOU/8f14e45f "Call data requested from the network, due Friday"
      toex jobs note EMSOU/8f14e45f - < findings.txt
    """
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise click.BadParameter("the note is empty", param_hint="TEXT")
    request = pb.AddJobNoteRequest(parent=name, text=text, request_id=request_id)
    response = cli.call(SERVICE, _stub(cli).AddJobNote, request, field_options={"text": "TEXT"})
    emit_one(
        output_format,
        response.note,
        lambda: render_fields(
            [
                ("note", response.note.name),
                ("author", response.note.author),
                ("written", format_time(response.note.create_time)),
                ("text", response.note.text),
            ]
        ),
    )


@jobs.command("feedback")
@click.argument("name", type=JOB_NAME, required=False)
@click.option(
    "--score",
    "--rating",
    "rating",
    required=True,
    type=click.IntRange(1, 5),
    help="How useful the support was, 1 (poor) to 5 (excellent).",
)
@click.option("--comment", default="", help="What the officer says.")
@click.option(
    "--token",
    default="",
    metavar="CODE",
    help="The officer's one-time feedback code (EMSOU/ID:TOKEN, from the delivery): no login needed.",
)
@click.option("--name", "officer_name", default="", help="The officer's name, if they wish to give it.")
@_request_id_option
@format_option
@pass_cli
def feedback(
    cli: CliContext,
    name: str | None,
    rating: int,
    comment: str,
    token: str,
    officer_name: str,
    request_id: str,
    output_format: str,
) -> None:
    """Record the requesting officer's feedback on a delivered job.

    The officer uses the one-time code the delivery gave (--token), with no toex account; it
    works once, until it expires. A supervisor may instead record it for them (NAME, signed in).

    \b
    Examples:
      toex jobs feedback --token EMSOU/8f14e45f:Qk3... --score 4 --comment "Identified two further suspects"
      toex jobs feedback EMSOU/8f14e45f --score 5 --comment "Told by phone"
    """
    if token:
        job_part, sep, secret = token.rpartition(":")
        if sep:
            job_name = JOB_NAME.parse(job_part)
            if name and name != job_name:
                raise click.UsageError("the feedback code is for another job than NAME")
            name, token = job_name, secret
        if not name:
            raise click.UsageError("give the whole feedback code (EMSOU/ID:TOKEN), or NAME with --token")
        request = pb.RecordFeedbackRequest(
            name=name, rating=rating, comment=comment, token=token, officer_name=officer_name
        )
        response = cli.call(
            SERVICE,
            _stub(cli).RecordFeedback,
            request,
            field_options={
                "rating": "--score",
                "comment": "--comment",
                "token": "--token",
                "officer_name": "--name",
            },
            anonymous=True,
        )
        emit_one(
            output_format,
            response,
            lambda: f"Thank you: your feedback on {response.name} is recorded.",
        )
        return
    if not name:
        raise click.UsageError("give --token CODE (the officer's feedback code), or NAME when signed in")
    request = pb.RecordFeedbackRequest(name=name, rating=rating, comment=comment, request_id=request_id)
    response = cli.call(
        SERVICE,
        _stub(cli).RecordFeedback,
        request,
        field_options={"rating": "--score", "comment": "--comment"},
    )
    _print_job(response.job, output_format)


@jobs.command("forces")
@format_option
def forces(output_format: str) -> None:
    """List the requesting forces' codes (for --force) and the threat categories (for --threat)."""
    rows = [
        [info.code, info.display_name, info.region.value if info.region else "national"]
        for info in FORCES.values()
    ]
    threats = "\n".join(f"  {code:<17} {name}" for code, name in THREATS.values())
    if output_format == "json":
        click.echo(
            json.dumps(
                {
                    "forces": [{"code": c, "name": n, "region": r} for c, n, r in rows],
                    "threats": [{"code": c, "name": n} for c, n in THREATS.values()],
                },
                indent=2,
            )
        )
        return
    click.echo(render_table(["code", "force", "region"], rows))
    click.echo("\nThreat categories:\n" + threats)


@jobs.command("capacity")
@click.argument("region", type=RegionType())
@format_option
@pass_cli
def capacity(cli: CliContext, region: Region, output_format: str) -> None:
    """Show a region's open jobs per researcher, and how many nobody holds.

    \b
    Examples:
      toex --purpose "tasking meeting" jobs capacity EMSOU
      toex --purpose "tasking meeting" jobs capacity london --format json
    """
    request = pb.GetRegionCapacityRequest(name=f"regions/{region.value}/capacity")
    response = cli.call(SERVICE, _stub(cli).GetRegionCapacity, request)

    def text() -> str:
        rows = [
            [r.username, _region(r.region), str(r.open_jobs), str(r.overdue_jobs)]
            for r in sorted(response.researchers, key=lambda r: (-r.open_jobs, r.username))
        ]
        table = (render_table(["researcher", "region", "open", "overdue"], rows) + "\n\n") if rows else ""
        return (
            f"{table}{region.value}: {response.open_jobs} open jobs, {response.unassigned_jobs} unassigned."
        )

    emit_one(output_format, response, text)


@jobs.command("brief")
@click.argument("name", type=JOB_NAME)
@click.option(
    "-o",
    "--output",
    "output",
    type=click.Path(dir_okay=False, writable=True),
    required=True,
    help="Where to write the pack.",
)
@click.option("--format", "doc_format", type=click.Choice(["pdf", "docx"]), default="pdf", show_default=True)
@pass_cli
def brief(cli: CliContext, name: str, output: str, doc_format: str) -> None:
    """Write the SIO briefing pack for a job (PDF or DOCX): the job, its notes, researchers and
    product, its subject entities with their records and grading, deconfliction notices, comms
    (network picture, common contacts, ranked new numbers, watchlist contacts, co-location), ANPR
    (travel patterns, convoys), the safeguarding referrals linked to it, what was submitted to the
    PND for it, and an annex of every dataset and record used with its grading. Every read is made with
    your token and the job as purpose (unless --purpose is given): what you may not see is an error,
    never a partial pack. Progress goes to stderr.

    \b
    Examples:
      toex jobs brief EMSOU/8f14e45f -o brief.pdf
      toex jobs brief EMSOU/8f14e45f -o brief.docx --format docx
    """
    from toex.comms.v1 import comms_pb2_grpc
    from toex.entity.v1 import entity_pb2_grpc
    from toex.pnd.v1 import pnd_pb2_grpc
    from toex.safeguarding.v1 import safeguarding_pb2_grpc
    from toex_products import render
    from toex_products.grpc_sources import GrpcSources
    from toex_products.pack import assemble

    work_under(click.get_current_context(), name)
    sources = GrpcSources(
        lambda service, method, request: cli.call(service, method, request),
        lambda: _stub(cli),
        lambda: entity_pb2_grpc.EntityResolutionServiceStub(cli.channel("entity")),
        lambda: comms_pb2_grpc.CommsAnalysisServiceStub(cli.channel("comms")),
        lambda: safeguarding_pb2_grpc.SafeguardingServiceStub(cli.channel("safeguarding")),
        lambda: pnd_pb2_grpc.PndSyncServiceStub(cli.channel("pnd")),
    )
    pack = assemble(sources, name, progress=lambda line: click.echo(line, err=True))
    data = render.pdf(pack) if doc_format == "pdf" else render.docx(pack)
    with open(output, "wb") as out:
        out.write(data)
    click.echo(f"wrote {output} ({len(data)} bytes)", err=True)


COMMANDS: list[click.Command] = [jobs]
