"""`toex referrals ...`: the safeguarding service (referrals of potential victims, statutory clocks)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click
from google.protobuf import field_mask_pb2
from toex.safeguarding.v1 import safeguarding_pb2 as pb
from toex.safeguarding.v1 import safeguarding_pb2_grpc
from toex.type.v1 import region_pb2
from toex_kernel.regions import Region
from toex_kernel.timestamps import optional_timestamp as _stamp

from toex_cli.context import CliContext, Endpoint, pass_cli
from toex_cli.output import (
    emit_list,
    emit_one,
    format_option,
    format_time,
    message_to_dict,
    render_fields,
)
from toex_cli.params import WHEN, EnumType, RegionType, enum_short_name, parse_job_name, work_under

SERVICE = "safeguarding"
ENDPOINTS = (Endpoint(SERVICE, "127.0.0.1:50055", "The safeguarding service"),)

CONCERN = EnumType(pb.Concern.DESCRIPTOR)
DESTINATION = EnumType(pb.Destination.DESCRIPTOR)
STATE = EnumType(pb.ReferralState.DESCRIPTOR)
RISK = EnumType(pb.RiskLevel.DESCRIPTOR)
AGE = EnumType(pb.AgeBand.DESCRIPTOR)
CONSENT = EnumType(pb.ConsentStatus.DESCRIPTOR)
DECISION = EnumType(pb.DecisionKind.DESCRIPTOR)
OUTCOME = EnumType(pb.DecisionOutcome.DESCRIPTOR)
EVIDENCE = EnumType(pb.EvidenceKind.DESCRIPTOR)

FIELDS = {
    "parent": "--region",
    "referral.subject.entity_id": "--subject",
    "referral.subject.date_of_birth": "--dob",
    "referral.subject.local_authority": "--local-authority",
    "referral.concerns": "--concern",
    "referral.destinations": "--destination",
    "referral.linked_job": "--job",
    "reason": "--reason",
    "destination": "--destination",
    "kind": "--kind",
    "outcome": "--outcome",
}


def _stub(cli: CliContext) -> safeguarding_pb2_grpc.SafeguardingServiceStub:
    return safeguarding_pb2_grpc.SafeguardingServiceStub(cli.channel(SERVICE))


def referral_name(text: str) -> str:
    """`regions/EMSOU/referrals/ID`, or the short `EMSOU/ID`."""
    parts = text.strip().strip("/").split("/")
    if len(parts) == 2:
        return f"regions/{Region.parse(parts[0]).value}/referrals/{parts[1]}"
    return text.strip()


def _job_arg(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """`--job` as every other command takes a job: regions/EMSOU/jobs/ID or EMSOU/ID ('' unlinks)."""
    if not value or not value.strip():
        return value
    try:
        job = parse_job_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    work_under(ctx, job)
    return job


def _short(descriptor: object, value: int) -> str:
    return enum_short_name(descriptor, value).lower() if value else ""  # type: ignore[arg-type]


def render_referral(r: pb.Referral) -> str:
    subject = r.subject
    age = subject.date_of_birth or _short(pb.AgeBand.DESCRIPTOR, subject.age_band) or "not established"
    clocks = "\n".join(
        f"{_short(pb.ClockKind.DESCRIPTOR, c.kind)}: "
        + (
            f"due {format_time(c.due_time)}"
            if c.HasField("due_time")
            else f"not before {format_time(c.not_before_time)}"
        )
        + (f", met {format_time(c.satisfied_time)}" if c.HasField("satisfied_time") else "")
        + (" OVERDUE" if c.overdue else "")
        + (f" (escalated to {_short(pb.Escalation.DESCRIPTOR, c.escalation)})" if c.escalation else "")
        for c in r.clocks
    )
    progress = "\n".join(
        f"{_short(pb.Destination.DESCRIPTOR, p.destination)}: "
        + ", ".join(
            part
            for part in (
                f"sent {format_time(p.submit_time)}" if p.HasField("submit_time") else "not sent",
                f"acknowledged {format_time(p.acknowledge_time)}" if p.HasField("acknowledge_time") else "",
                *(
                    f"{_short(pb.DecisionKind.DESCRIPTOR, d.kind)} {_short(pb.DecisionOutcome.DESCRIPTOR, d.outcome)}"
                    f" {format_time(d.decision_time)} {d.detail}".strip()
                    for d in p.decisions
                ),
            )
            if part
        )
        for p in r.progress
    )
    notice = ""
    if r.HasField("duty_to_notify"):
        n = r.duty_to_notify
        notice = f"{n.reference}: {', '.join(_short(pb.Concern.DESCRIPTOR, c) for c in n.concerns)}, adult, anonymous"
    return render_fields(
        [
            ("name", r.name),
            ("state", enum_short_name(pb.ReferralState.DESCRIPTOR, r.state)),
            ("subject", subject.entity_id),
            ("age", age),
            ("local authority", subject.local_authority),
            ("consent", _short(pb.ConsentStatus.DESCRIPTOR, subject.consent.status) or "not recorded"),
            ("concerns", ", ".join(_short(pb.Concern.DESCRIPTOR, c) for c in r.concerns)),
            ("risk", _short(pb.RiskLevel.DESCRIPTOR, r.risk_level) or "not assessed"),
            ("destinations", ", ".join(_short(pb.Destination.DESCRIPTOR, d) for d in r.destinations)),
            (
                "proposals",
                "\n".join(
                    f"{_short(pb.Destination.DESCRIPTOR, p.destination)}: {p.reason}" for p in r.proposals
                ),
            ),
            (
                "evidence",
                "\n".join(
                    f"{_short(pb.EvidenceKind.DESCRIPTOR, e.kind)} {e.ref} {e.description}".strip()
                    for e in r.evidence
                ),
            ),
            ("progress", progress),
            ("clocks", clocks),
            ("duty to notify", notice),
            ("linked job", r.linked_job),
            ("approved", f"{format_time(r.approve_time)} by {r.approved_by}" if r.approved_by else ""),
            ("returned", r.return_reason),
            ("closed", r.close_reason),
            ("created", f"{format_time(r.create_time)} by {r.created_by}"),
        ]
    )


COLUMNS = ["name", "state", "concerns", "risk", "overdue", "linked job"]


def referral_row(r: pb.Referral) -> list[str]:
    return [
        r.name,
        enum_short_name(pb.ReferralState.DESCRIPTOR, r.state),
        ",".join(_short(pb.Concern.DESCRIPTOR, c) for c in r.concerns),
        _short(pb.RiskLevel.DESCRIPTOR, r.risk_level),
        "OVERDUE" if r.overdue else "",
        r.linked_job,
    ]


def _print(referral: pb.Referral, output_format: str) -> None:
    emit_one(output_format, referral, lambda: render_referral(referral))


def _request_id(func: click.decorators.FC) -> click.decorators.FC:
    return click.option(
        "--request-id", default="", metavar="ID", help="Idempotency key: a repeat returns the first answer."
    )(func)


name_argument = click.argument("name", type=referral_name)


@click.group(name="referrals", short_help="Safeguarding referrals: the safeguarding service.")
def referrals() -> None:
    """Safeguarding referrals: draft, approve, send, record decisions, watch the clocks.

    Referral names look like regions/EMSOU/referrals/ID; EMSOU/ID is accepted too. Reads need
    a purpose: toex --purpose "Op NAME" referrals ...

    \b
    Examples:
      toex --purpose "Op Sandpiper" referrals list --state draft
      toex referrals approve EMSOU/4f3a9c0d1e2b3a4c
      toex --purpose "overdue review" referrals overdue --region -
    """


@referrals.command("create")
@click.option("--region", required=True, type=RegionType(), help="The owning region.")
@click.option("--subject", required=True, metavar="ENTITY_ID", help="The subject's entity id.")
@click.option(
    "--concern", "concerns", required=True, multiple=True, type=CONCERN, help="What is suspected; repeatable."
)
@click.option("--dob", default="", metavar="YYYY-MM-DD", help="Date of birth, when known.")
@click.option("--age", type=AGE, default=None, help="Age band when the date of birth is not known.")
@click.option("--local-authority", default="", help="The subject's local authority area.")
@click.option("--consent", type=CONSENT, default=None, help="An adult's answer about an NRM referral.")
@click.option("--risk", type=RISK, default=None, help="Assessed risk of harm.")
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    type=DESTINATION,
    help="Override the proposals; repeatable.",
)
@click.option(
    "--job",
    default="",
    metavar="JOB_NAME",
    callback=_job_arg,
    help="The tasking job it belongs to, EMSOU/JOB_ID or its full name (outcomes are noted there).",
)
@_request_id
@format_option
@pass_cli
def create(
    cli: CliContext,
    region: Region,
    subject: str,
    concerns: tuple[int, ...],
    dob: str,
    age: int | None,
    local_authority: str,
    consent: int | None,
    risk: int | None,
    destinations: tuple[int, ...],
    job: str,
    request_id: str,
    output_format: str,
) -> None:
    """Draft a referral; the service proposes destinations from the rules and explains them.

    \b
    Examples:
      toex referrals create --region EMSOU --subject ent-123 --concern child_criminal_exploitation \\
          --age child --local-authority "Derby City" --risk high --job regions/EMSOU/jobs/abc
    """
    referral = pb.Referral(
        subject=pb.Subject(
            entity_id=subject,
            date_of_birth=dob,
            age_band=age or 0,  # type: ignore[arg-type]
            local_authority=local_authority,
            consent=pb.Consent(status=consent or 0),  # type: ignore[arg-type]
        ),
        concerns=list(concerns),  # type: ignore[arg-type]
        risk_level=risk or 0,  # type: ignore[arg-type]
        destinations=list(destinations),  # type: ignore[arg-type]
        linked_job=job,
    )
    request = pb.CreateReferralRequest(
        parent=f"regions/{region.value}", referral=referral, request_id=request_id
    )
    _print(
        cli.call(SERVICE, _stub(cli).CreateReferral, request, field_options=FIELDS).referral, output_format
    )


@referrals.command("get")
@name_argument
@format_option
@pass_cli
def get(cli: CliContext, name: str, output_format: str) -> None:
    """Show one referral: proposals with reasons, progress, clocks."""
    _print(
        cli.call(SERVICE, _stub(cli).GetReferral, pb.GetReferralRequest(name=name)).referral, output_format
    )


@referrals.command("list")
@click.option(
    "--region",
    type=RegionType(allow_all=True),
    default="-",
    show_default=True,
    help="One region, or - for all you may see.",
)
@click.option("--state", "states", multiple=True, type=STATE, help="Only this state; repeatable.")
@click.option("--overdue", is_flag=True, help="Only referrals with an overdue clock.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--page-token", default="", metavar="TOKEN")
@format_option
@pass_cli
def list_referrals(
    cli: CliContext,
    region: Region | None,
    states: tuple[int, ...],
    overdue: bool,
    limit: int,
    page_token: str,
    output_format: str,
) -> None:
    """List referrals you may see, newest first.

    With a directory of installations, --region - asks every installation at once (a line on
    standard error for a region whose installation did not answer, and exit code 3).
    """
    if region is None and page_token and cli.routes(SERVICE):
        raise click.UsageError("--page-token continues one installation's list: give --region CODE with it")

    def fetch() -> pb.ListReferralsResponse:
        request = pb.ListReferralsRequest(
            parent=f"regions/{region.value if region else '-'}",
            states=list(states),  # type: ignore[arg-type]
            overdue_only=overdue,
            page_size=limit,
            page_token=page_token,
        )
        return cli.call(SERVICE, _stub(cli).ListReferrals, request)

    gathered = cli.gather(SERVICE, fetch) if region is None else None
    if gathered is None or not gathered.fanned_out:
        response = gathered.values()[0] if gathered else fetch()
        shown, token, more = list(response.referrals), response.next_page_token, ""
        if token:
            more = f"(more: --page-token {token})"
    else:
        answers = [(i.name if i else "", r) for i, r in gathered.answers]
        merged = {r.name: r for _, answer in answers for r in answer.referrals}
        newest = sorted(merged.values(), key=lambda r: (r.create_time.seconds, r.create_time.nanos, r.name))
        shown, token = newest[::-1][:limit], ""
        cut = [name for name, answer in answers if answer.next_page_token]
        if cut or len(merged) > limit:
            more = f"(more in {', '.join(cut) or 'the installations together'}: give --region CODE, or raise --limit)"
        else:
            more = ""
    data = {"referrals": [message_to_dict(r) for r in shown], "next_page_token": token}
    emit_list(
        output_format,
        gathered.json(data) if gathered else data,
        COLUMNS,
        (referral_row(r) for r in shown),
        note=more,
    )
    if gathered:
        gathered.finish()


@referrals.command("update")
@name_argument
@click.option("--dob", default=None, metavar="YYYY-MM-DD", help="Date of birth ('' clears it).")
@click.option("--age", type=AGE, default=None)
@click.option("--local-authority", default=None)
@click.option("--consent", type=CONSENT, default=None, help="Record an adult's consent answer.")
@click.option("--concern", "concerns", multiple=True, type=CONCERN, help="Replace the concerns; repeatable.")
@click.option("--risk", type=RISK, default=None)
@click.option(
    "--destination",
    "destinations",
    multiple=True,
    type=DESTINATION,
    help="Replace the destinations; repeatable.",
)
@click.option(
    "--job", default=None, metavar="JOB_NAME", callback=_job_arg, help="Link a tasking job: EMSOU/JOB_ID."
)
@click.option(
    "--evidence",
    "evidence",
    multiple=True,
    nargs=2,
    type=(EVIDENCE, str),
    metavar="KIND REF",
    help="Add evidence; repeatable.",
)
@_request_id
@format_option
@pass_cli
def update(
    cli: CliContext,
    name: str,
    dob: str | None,
    age: int | None,
    local_authority: str | None,
    consent: int | None,
    concerns: tuple[int, ...],
    risk: int | None,
    destinations: tuple[int, ...],
    job: str | None,
    evidence: tuple[tuple[int, str], ...],
    request_id: str,
    output_format: str,
) -> None:
    """Change a draft.

    \b
    Examples:
      toex referrals update EMSOU/ID --age adult --consent refused
      toex referrals update EMSOU/ID --evidence dataset regions/EMSOU/datasets/cdr7
    """
    r: Any = pb.Referral(name=name)
    paths: list[str] = []
    if dob is not None:
        r.subject.date_of_birth = dob
        paths.append("subject.date_of_birth")
    if age is not None:
        r.subject.age_band = age
        paths.append("subject.age_band")
    if local_authority is not None:
        r.subject.local_authority = local_authority
        paths.append("subject.local_authority")
    if consent is not None:
        r.subject.consent.status = consent
        paths.append("subject.consent")
    if concerns:
        r.concerns.extend(concerns)
        paths.append("concerns")
    if risk is not None:
        r.risk_level = risk
        paths.append("risk_level")
    if destinations:
        r.destinations.extend(destinations)
        paths.append("destinations")
    if job is not None:
        r.linked_job = job
        paths.append("linked_job")
    if evidence:
        r.evidence.extend(pb.Evidence(kind=kind, ref=ref) for kind, ref in evidence)  # type: ignore[arg-type]
        paths.append("evidence")
    if not paths:
        raise click.UsageError("say what to change")
    request = pb.UpdateReferralRequest(
        referral=r, update_mask=field_mask_pb2.FieldMask(paths=paths), request_id=request_id
    )
    _print(
        cli.call(SERVICE, _stub(cli).UpdateReferral, request, field_options=FIELDS).referral, output_format
    )


def _transition(
    command: str, method: str, request_type: Any, help_text: str, *, reason: bool = False
) -> None:
    @referrals.command(command, help=help_text)
    @name_argument
    @click.option("--reason", default="", required=reason and command == "return", help="Why.")
    @_request_id
    @format_option
    @pass_cli
    def run(cli: CliContext, name: str, reason: str, request_id: str, output_format: str) -> None:
        fields = {"name": name, "request_id": request_id}
        if "reason" in request_type.DESCRIPTOR.fields_by_name:
            fields["reason"] = reason
        response = cli.call(
            SERVICE, getattr(_stub(cli), method), request_type(**fields), field_options=FIELDS
        )
        _print(response.referral, output_format)


_transition(
    "submit", "SubmitForApproval", pb.SubmitForApprovalRequest, "Send a draft to a supervisor for approval."
)
_transition(
    "approve",
    "ApproveReferral",
    pb.ApproveReferralRequest,
    "Approve a referral (a supervisor other than the officer who sent it).",
)
_transition(
    "return",
    "ReturnReferral",
    pb.ReturnReferralRequest,
    "Return a referral to draft with --reason.",
    reason=True,
)
_transition(
    "close",
    "CloseReferral",
    pb.CloseReferralRequest,
    "Close a decided referral, or withdraw a draft with --reason.",
)


@referrals.command("sent")
@name_argument
@click.option("--destination", required=True, type=DESTINATION)
@click.option("--reference", default="", help="The agency's reference.")
@click.option("--at", "when", type=WHEN, default=None, help="When it was sent (default now).")
@_request_id
@format_option
@pass_cli
def sent(
    cli: CliContext,
    name: str,
    destination: Any,
    reference: str,
    when: datetime | None,
    request_id: str,
    output_format: str,
) -> None:
    """Record that a destination was sent the referral; its statutory clock starts."""
    request = pb.RecordSubmissionRequest(
        name=name,
        destination=destination,
        agency_reference=reference,
        submit_time=_stamp(when),
        request_id=request_id,  # type: ignore[arg-type]
    )
    _print(
        cli.call(SERVICE, _stub(cli).RecordSubmission, request, field_options=FIELDS).referral, output_format
    )


@referrals.command("acknowledged")
@name_argument
@click.option("--destination", required=True, type=DESTINATION)
@click.option("--at", "when", type=WHEN, default=None, help="When (default now).")
@_request_id
@format_option
@pass_cli
def acknowledged(
    cli: CliContext, name: str, destination: Any, when: datetime | None, request_id: str, output_format: str
) -> None:
    """Record that a destination acknowledged the referral."""
    request = pb.RecordAcknowledgementRequest(
        name=name,
        destination=destination,
        acknowledge_time=_stamp(when),
        request_id=request_id,  # type: ignore[arg-type]
    )
    _print(
        cli.call(SERVICE, _stub(cli).RecordAcknowledgement, request, field_options=FIELDS).referral,
        output_format,
    )


@referrals.command("decided")
@name_argument
@click.option("--destination", required=True, type=DESTINATION)
@click.option("--kind", required=True, type=DECISION)
@click.option("--outcome", required=True, type=OUTCOME)
@click.option("--detail", default="", help="What was decided.")
@click.option("--at", "when", type=WHEN, default=None, help="When the agency decided (default now).")
@_request_id
@format_option
@pass_cli
def decided(
    cli: CliContext,
    name: str,
    destination: Any,
    kind: Any,
    outcome: Any,
    detail: str,
    when: datetime | None,
    request_id: str,
    output_format: str,
) -> None:
    """Record an agency's decision; it is noted on the linked tasking job.

    \b
    Examples:
      toex referrals decided EMSOU/ID --destination nrm --kind nrm_reasonable_grounds --outcome positive
    """
    request = pb.RecordDecisionRequest(
        name=name,
        destination=destination,
        kind=kind,
        outcome=outcome,
        detail=detail,  # type: ignore[arg-type]
        decision_time=_stamp(when),
        request_id=request_id,
    )
    _print(
        cli.call(SERVICE, _stub(cli).RecordDecision, request, field_options=FIELDS).referral, output_format
    )


OVERDUE_COLUMNS = ["referral", "region", "clock", "due", "escalated to", "risk"]


@referrals.command("overdue")
@click.option("--region", type=RegionType(allow_all=True), default="-", show_default=True)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@click.option("--page-token", default="", metavar="TOKEN")
@format_option
@pass_cli
def overdue(cli: CliContext, region: Region | None, limit: int, page_token: str, output_format: str) -> None:
    """The overdue list: statutory clocks past due, most overdue first.

    With a directory of installations, --region - asks every installation at once (a line on
    standard error for a region whose installation did not answer, and exit code 3).
    """
    if region is None and page_token and cli.routes(SERVICE):
        raise click.UsageError("--page-token continues one installation's list: give --region CODE with it")

    def fetch() -> pb.ListOverdueResponse:
        request = pb.ListOverdueRequest(
            parent=f"regions/{region.value if region else '-'}", page_size=limit, page_token=page_token
        )
        return cli.call(SERVICE, _stub(cli).ListOverdue, request)

    gathered = cli.gather(SERVICE, fetch) if region is None else None
    if gathered is None or not gathered.fanned_out:
        response = gathered.values()[0] if gathered else fetch()
    else:
        answers = gathered.values()
        items = sorted(
            (i for answer in answers for i in answer.items),
            key=lambda i: (i.clock.due_time.seconds, i.clock.due_time.nanos, i.referral, i.clock.kind),
        )
        response = pb.ListOverdueResponse(items=items[:limit], total_size=sum(a.total_size for a in answers))
    emit_list(
        output_format,
        gathered.json(message_to_dict(response)) if gathered and gathered.fanned_out else response,
        OVERDUE_COLUMNS,
        (
            [
                i.referral,
                enum_short_name(region_pb2.Region.DESCRIPTOR, i.region),
                _short(pb.ClockKind.DESCRIPTOR, i.clock.kind),
                format_time(i.clock.due_time),
                _short(pb.Escalation.DESCRIPTOR, i.clock.escalation),
                _short(pb.RiskLevel.DESCRIPTOR, i.risk_level),
            ]
            for i in response.items
        ),
        note=f"{response.total_size} overdue",
    )
    if gathered:
        gathered.finish()


COMMANDS = (referrals,)
