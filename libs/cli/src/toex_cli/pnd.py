"""`toex pnd ...`: the PND sync service (intelligence records kept complete on the PND)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
from google.protobuf import json_format
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pnd_pb2_grpc, pole_pb2, sync_pb2
from toex.type.v1 import region_pb2, security_pb2
from toex_kernel.regions import Region

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
from toex_cli.params import EnumType, RegionType, enum_short_name

SERVICE = "pnd"
ENDPOINTS = (Endpoint(SERVICE, "127.0.0.1:50053", "The PND sync service"),)
SYNC_STATE = EnumType(sync_pb2.SyncState.DESCRIPTOR)
CATEGORY = EnumType(pb.ReconciliationCategory.DESCRIPTOR)
_NAME = re.compile(r"^(?:regions/)?([A-Za-z]+)/(?:intelligence/)?([A-Za-z0-9_-]{1,64})$")


def _stub(cli: CliContext) -> pnd_pb2_grpc.PndSyncServiceStub:
    return pnd_pb2_grpc.PndSyncServiceStub(cli.channel(SERVICE))


def record_name(text: str) -> str:
    """`regions/EMSOU/intelligence/ID`, `EMSOU/intelligence/ID` or `EMSOU/ID`."""
    found = _NAME.match(text.strip().strip("/"))
    if not found:
        raise click.BadParameter(
            f"{text!r} is not a record name; write regions/EMSOU/intelligence/ID or EMSOU/ID"
        )
    try:
        region = Region.parse(found.group(1))
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    return f"regions/{region.value}/intelligence/{found.group(2)}"


def _name_arg(ctx: click.Context, param: click.Parameter, value: str) -> str:
    return record_name(value)


def _partial_date(text: str) -> pole_pb2.PartialDate:
    parts = [int(p) for p in text.split("-")] if text else []
    if not 1 <= len(parts) <= 3:
        raise click.BadParameter("write YYYY, YYYY-MM or YYYY-MM-DD", param_hint="--dob")
    return pole_pb2.PartialDate(**dict(zip(("year", "month", "day"), parts, strict=False)))


def content_options(func: Any) -> Any:
    """The record content: one kind, its details, grading and links."""
    options = [
        click.option("--phone", metavar="NUMBER", help="A phone number (any written form; stored as E.164)."),
        click.option("--vrm", metavar="VRM", help="A vehicle registration mark."),
        click.option(
            "--person", metavar='"GIVEN FAMILY"', help="A person's name; the last word is the family name."
        ),
        click.option("--dob", default="", metavar="DATE", help="With --person: YYYY, YYYY-MM or YYYY-MM-DD."),
        click.option("--postcode", default="", help="With --person: a postcode of their address."),
        click.option("--town", default="", help="With --person: the town of their address."),
        click.option("--account", metavar="PLATFORM:HANDLE", help="An online account."),
        click.option("--grading", default="", metavar="1B", help="Source evaluation 1-3 and assessment A-E."),
        click.option(
            "--handling", type=click.Choice(["P", "C"], case_sensitive=False), help="Handling code."
        ),
        click.option("--conditions", default="", help="The conditions of handling code C."),
        click.option(
            "--link",
            "links",
            multiple=True,
            metavar="TYPE=NAME",
            help="Link to another record, e.g. uses=EMSOU/ID; repeatable.",
        ),
        click.option(
            "--json",
            "json_file",
            type=click.Path(exists=True, dir_okay=False, path_type=Path),
            help="An IntelligenceRecord as JSON (proto field names) instead of the options.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def build_record(values: dict[str, Any]) -> tuple[pb.IntelligenceRecord, list[str]]:
    """The record and the fields that were given (for an update mask)."""
    if values.get("json_file"):
        data = json.loads(values["json_file"].read_text())
        record = json_format.ParseDict(data, pb.IntelligenceRecord())
        return record, [f for f in ("entity", "grading", "links") if f in data]
    record, given = pb.IntelligenceRecord(), []
    entity = record.entity
    kinds = [k for k in ("phone", "vrm", "person", "account") if values.get(k)]
    if len(kinds) > 1:
        raise click.UsageError("give one of --phone, --vrm, --person, --account")
    if kinds:
        given.append("entity")
        if values.get("phone"):
            entity.phone.e164 = values["phone"]
        elif values.get("vrm"):
            entity.vehicle.vrm = values["vrm"]
        elif values.get("account"):
            platform_name, _, handle = values["account"].partition(":")
            entity.online_account.platform, entity.online_account.handle = platform_name, handle
        else:
            *given_names, family = values["person"].split()
            name = entity.person.names.add(given_names=given_names, family_name=family)
            del name  # added in place
            if values.get("dob"):
                entity.person.date_of_birth.CopyFrom(_partial_date(values["dob"]))
            if values.get("postcode") or values.get("town"):
                entity.person.addresses.add(postcode=values.get("postcode", ""), town=values.get("town", ""))
    if values.get("grading") or values.get("handling"):
        given.append("grading")
        grade = values.get("grading", "").upper()
        if grade and not re.fullmatch(r"[1-3][A-E]", grade):
            raise click.BadParameter(
                "write the source evaluation and the assessment, e.g. 1B", param_hint="--grading"
            )
        if grade:
            record.grading.source_evaluation = pole_pb2.SourceEvaluation.Value(
                f"SOURCE_EVALUATION_{grade[0]}"
            )
            record.grading.intelligence_assessment = pole_pb2.IntelligenceAssessment.Value(
                f"INTELLIGENCE_ASSESSMENT_{grade[1]}"
            )
        if values.get("handling"):
            record.grading.handling = (
                security_pb2.HANDLING_CODE_P
                if values["handling"].upper() == "P"
                else security_pb2.HANDLING_CODE_C
            )
        record.grading.handling_conditions = values.get("conditions", "")
    if values.get("links"):
        given.append("links")
        for link in values["links"]:
            kind, _, target = link.partition("=")
            try:
                link_type = pole_pb2.LinkType.Value(f"LINK_TYPE_{kind.strip().upper()}")
            except ValueError:
                raise click.BadParameter(f"unknown link type {kind!r}", param_hint="--link") from None
            record.links.add(target=record_name(target), type=link_type)
    return record, given


def _region(value: int) -> str:
    return enum_short_name(region_pb2.Region.DESCRIPTOR, value) if value else ""


def _state(value: int) -> str:
    return enum_short_name(sync_pb2.SyncState.DESCRIPTOR, value)


def _content(record: pb.IntelligenceRecord) -> str:
    entity = record.entity
    which = entity.WhichOneof("kind")
    if which == "phone":
        return entity.phone.e164
    if which == "vehicle":
        return entity.vehicle.vrm
    if which == "person":
        name = entity.person.names[0] if entity.person.names else None
        dob = entity.person.date_of_birth
        born = f" b.{dob.year}" if dob.year else ""
        return f"{' '.join(name.given_names)} {name.family_name}{born}".strip() if name else ""
    if which == "online_account":
        return f"{entity.online_account.platform}:{entity.online_account.handle}"
    return json_format.MessageToJson(entity, indent=None) if which else ""


def render_record(record: pb.IntelligenceRecord, submissions: list[pb.Submission] | None = None) -> str:
    grading = record.grading
    grade = ""
    if grading.source_evaluation:
        grade = (
            enum_short_name(pole_pb2.SourceEvaluation.DESCRIPTOR, grading.source_evaluation)
            + enum_short_name(pole_pb2.IntelligenceAssessment.DESCRIPTOR, grading.intelligence_assessment)
            + enum_short_name(security_pb2.HandlingCode.DESCRIPTOR, grading.handling)
        )
    history = "\n".join(
        f"v{s.record_version} {enum_short_name(sync_pb2.SubmissionOperation.DESCRIPTOR, s.operation)} "
        f"{enum_short_name(pb.SubmissionState.DESCRIPTOR, s.state)} attempts={s.attempts}"
        + (f" answered {format_time(s.answer_time, seconds=True)}" if s.answer_time.seconds else "")
        + (f" last error: {s.last_error}" if s.last_error else "")
        + "".join(f"\n  {r.code} {r.field}: {r.description}" for r in s.reasons)
        for s in submissions or []
    )
    return render_fields(
        [
            ("name", record.name),
            ("job", record.job),
            ("kind", enum_short_name(pole_pb2.PoleKind.DESCRIPTOR, record.kind).lower()),
            ("content", _content(record)),
            ("grading", grade),
            ("conditions", grading.handling_conditions),
            (
                "links",
                "\n".join(
                    f"{enum_short_name(pole_pb2.LinkType.DESCRIPTOR, x.type).lower()} {x.target}"
                    for x in record.links
                ),
            ),
            ("version", str(record.version)),
            ("sync state", _state(record.sync_state)),
            ("PND id", record.pnd_id),
            ("PND version", str(record.pnd_version) if record.pnd_version else ""),
            ("rejected", "\n".join(f"{r.code} {r.field}: {r.description}" for r in record.rejection_reasons)),
            ("released by", record.released_by),
            ("created", f"{format_time(record.create_time)} by {record.created_by}"),
            ("updated", format_time(record.update_time)),
            ("deleted", format_time(record.delete_time)),
            ("submissions", history),
        ]
    )


def _print_record(record: pb.IntelligenceRecord, output_format: str) -> None:
    emit_one(output_format, record, lambda: render_record(record))


@click.group(name="pnd", short_help="Keep the Police National Database complete: the PND sync service.")
def pnd() -> None:
    """Intelligence records kept complete and current on the PND, PND searches and reconciliation.

    Record names look like regions/EMSOU/intelligence/ID; EMSOU/ID is accepted too. Reads need a
    purpose: toex --purpose "Op NAME" pnd ...

    \b
    Examples:
      toex pnd submit --region EMSOU --phone "07700 900123" --grading 1B --handling P
      toex --purpose "Op Kestrel" pnd show EMSOU/3f2a9c
      toex pnd status
      toex pnd reconcile run
    """


@pnd.command("submit")
@click.option("--region", required=True, type=RegionType(), help="The region that owns the record.")
@content_options
@click.option(
    "--request-id", default="", metavar="ID", help="Idempotency key: a repeat returns the first answer."
)
@format_option
@pass_cli
def submit(cli: CliContext, region: Region, request_id: str, output_format: str, **values: Any) -> None:
    """Record intelligence and queue it for the PND (code C waits for a supervisor).

    \b
    Examples:
      toex pnd submit --region EMSOU --phone "07700 900123" --grading 1B --handling P
      toex pnd submit --region EMSOU --person "Liam Hargreaves" --dob 1998-07-02 --postcode "DE1 3LD" \\
          --grading 2C --handling C --conditions "handler's consent" --link uses=EMSOU/3f2a9c
      toex pnd submit --region EMSOU --json record.json
    """
    record, _ = build_record(values)
    request = pb.SubmitIntelligenceRequest(
        parent=f"regions/{region.value}", record=record, request_id=request_id
    )
    response = cli.call(SERVICE, _stub(cli).SubmitIntelligence, request)
    _print_record(response.record, output_format)


@pnd.command("update")
@click.argument("name", callback=_name_arg)
@content_options
@click.option(
    "--version", "expected", type=int, default=0, help="Refuse unless the record is at this version."
)
@format_option
@pass_cli
def update_record(cli: CliContext, name: str, expected: int, output_format: str, **values: Any) -> None:
    """Change a record (a new version, queued for the PND); only the parts given change.

    \b
    Examples:
      toex pnd update EMSOU/3f2a9c --vrm "AB12 CDE"
      toex pnd update EMSOU/3f2a9c --grading 1A --handling P --version 2
    """
    record, given = build_record(values)
    if not given:
        raise click.UsageError("say what changes (content, --grading/--handling or --link)")
    record.name, record.version = name, expected
    request = pb.UpdateIntelligenceRequest(record=record)
    request.update_mask.paths.extend(given)
    _print_record(cli.call(SERVICE, _stub(cli).UpdateIntelligence, request).record, output_format)


@pnd.command("delete")
@click.argument("name", callback=_name_arg)
@format_option
@pass_cli
def delete(cli: CliContext, name: str, output_format: str) -> None:
    """Delete a record locally and queue its withdrawal from the PND."""
    response = cli.call(SERVICE, _stub(cli).DeleteIntelligence, pb.DeleteIntelligenceRequest(name=name))
    _print_record(response.record, output_format)


@pnd.command("release")
@click.argument("name", callback=_name_arg)
@click.option("--reason", required=True, help="Why the conditions allow the PND to have it.")
@format_option
@pass_cli
def release(cli: CliContext, name: str, reason: str, output_format: str) -> None:
    """Release a record held for its handling conditions (supervisors)."""
    request = pb.ReleaseIntelligenceRequest(name=name, reason=reason)
    response = cli.call(
        SERVICE, _stub(cli).ReleaseIntelligence, request, field_options={"reason": "--reason"}
    )
    _print_record(response.record, output_format)


@pnd.command("show")
@click.argument("name", callback=_name_arg)
@format_option
@pass_cli
def show(cli: CliContext, name: str, output_format: str) -> None:
    """Show a record, its sync state and every submission with the PND's answers."""
    stub = _stub(cli)
    record = cli.call(SERVICE, stub.GetIntelligence, pb.GetIntelligenceRequest(name=name)).record
    history = cli.call(SERVICE, stub.ListSubmissions, pb.ListSubmissionsRequest(parent=name)).submissions
    emit_one(
        output_format,
        {"record": message_to_dict(record), "submissions": [message_to_dict(s) for s in history]},
        lambda: render_record(record, list(history)),
    )


@pnd.command("list")
@click.option("--region", type=RegionType(allow_all=True), default="-", show_default=True)
@click.option("--state", "states", type=SYNC_STATE, multiple=True, help="Only this sync state; repeatable.")
@click.option("--deleted", is_flag=True, help="Include deleted records.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@format_option
@pass_cli
def list_records(
    cli: CliContext,
    region: Region | None,
    states: tuple[int, ...],
    deleted: bool,
    limit: int,
    output_format: str,
) -> None:
    """List records, newest change first.

    With a directory of installations, --region - asks every installation at once (a line on
    standard error for a region whose installation did not answer, and exit code 3).

    \b
    Examples:
      toex --purpose "Op Kestrel" pnd list --region EMSOU --state held --state rejected
    """

    def fetch() -> pb.ListIntelligenceResponse:
        request = pb.ListIntelligenceRequest(
            parent=f"regions/{region.value if region else '-'}",
            sync_states=list(states),  # type: ignore[arg-type]
            show_deleted=deleted,
            page_size=limit,
        )
        return cli.call(SERVICE, _stub(cli).ListIntelligence, request)

    gathered = cli.gather(SERVICE, fetch) if region is None else None
    if gathered is None or not gathered.fanned_out:
        response = gathered.values()[0] if gathered else fetch()
        data: Any = response
    else:
        merged = {r.name: r for answer in gathered.values() for r in answer.records}
        newest = sorted(merged.values(), key=lambda r: (r.update_time.seconds, r.update_time.nanos, r.name))
        response = pb.ListIntelligenceResponse(records=newest[::-1][:limit])
        data = gathered.json(message_to_dict(response))
    emit_list(
        output_format,
        data,
        ["name", "kind", "content", "version", "sync", "pnd version", "job", "updated"],
        (
            [
                r.name,
                enum_short_name(pole_pb2.PoleKind.DESCRIPTOR, r.kind).lower(),
                _content(r),
                str(r.version),
                _state(r.sync_state),
                str(r.pnd_version or ""),
                r.job,
                format_time(r.update_time),
            ]
            for r in response.records
        ),
        empty="No records match.",
    )
    if gathered:
        gathered.finish()


@pnd.command("status")
@click.option("--region", type=RegionType(allow_all=True), default="-", show_default=True)
@format_option
@pass_cli
def status(cli: CliContext, region: Region | None, output_format: str) -> None:
    """How much waits for the PND, how long, and the records per sync state."""
    name = f"regions/{region.value if region else '-'}/syncStatus"
    response = cli.call(SERVICE, _stub(cli).GetSyncStatus, pb.GetSyncStatusRequest(name=name))
    emit_one(
        output_format,
        response,
        lambda: (
            render_fields(
                [
                    ("queued", str(response.queued)),
                    ("held", str(response.held)),
                    ("retrying", str(response.retrying)),
                    (
                        "oldest queued",
                        f"{response.oldest_queued_age.ToTimedelta()}" if response.queued else "",
                    ),
                    ("last error", response.last_error),
                    ("records", ", ".join(f"{_state(c.state).lower()} {c.count}" for c in response.records)),
                ]
            )
            or "Nothing queued."
        ),
    )


@pnd.command("search")
@click.option("--region", required=True, type=RegionType(), help="The region the search is made for.")
@click.option("--phone", help="Search a phone number.")
@click.option("--vrm", help="Search a vehicle registration mark.")
@click.option(
    "--account",
    metavar="URL_OR_PLATFORM:HANDLE",
    help="Search an online account: a profile URL or platform:handle (instagram:some.name).",
)
@click.option("--family", help="Search persons by family name...")
@click.option("--given", default="", help="...and given name,")
@click.option("--dob", default="", help="...date of birth (YYYY[-MM[-DD]]),")
@click.option("--postcode", default="", help="...postcode.")
@click.option("--max", "max_results", type=click.IntRange(1, 100), default=20, show_default=True)
@format_option
@pass_cli
def search(
    cli: CliContext,
    region: Region,
    phone: str | None,
    vrm: str | None,
    account: str | None,
    family: str | None,
    given: str,
    dob: str,
    postcode: str,
    max_results: int,
    output_format: str,
) -> None:
    """Search the PND; the results are also published for entity resolution.

    \b
    Examples:
      toex --purpose "Op Kestrel" pnd search --region EMSOU --phone "07700 900123"
      toex --purpose "Op Kestrel" pnd search --region EMSOU --family Carter --dob 1996
      toex --purpose "Op Kestrel" pnd search --region EMSOU --account instagram:some.name
    """
    query = sync_pb2.PndSearch()
    if sum(bool(x) for x in (phone, vrm, account, family)) != 1:
        raise click.UsageError("give one of --phone, --vrm, --account or --family")
    if phone:
        query.kind, query.phone_e164 = sync_pb2.PND_SEARCH_KIND_PHONE, phone
    elif vrm:
        query.kind, query.vrm = sync_pb2.PND_SEARCH_KIND_VEHICLE, vrm
    elif account:
        # checked by the service, which says what is wrong with it
        query.kind, query.online_account = sync_pb2.PND_SEARCH_KIND_ONLINE_ACCOUNT, account
    else:
        query.kind = sync_pb2.PND_SEARCH_KIND_PERSON
        query.person.family_name, query.person.given_name, query.person.postcode = (
            family or "",
            given,
            postcode,
        )
        if dob:
            query.person.date_of_birth.CopyFrom(_partial_date(dob))
    request = pb.SearchPndRequest(parent=f"regions/{region.value}", search=query, max_results=max_results)
    response = cli.call(SERVICE, _stub(cli).SearchPnd, request)
    # The job the purpose named, if it named one of the region's: the search is that job's.
    made_for = f"Search {response.search.name} made for {response.search.job}." if response.search.job else ""
    emit_list(
        output_format,
        response,
        ["source record", "kind", "content", "from", "links"],
        (
            [
                result.source_record_id,
                enum_short_name(pole_pb2.PoleKind.DESCRIPTOR, result.kind).lower(),
                _content(pb.IntelligenceRecord(entity=result.entity)),
                result.originating_organisation,
                ", ".join(
                    f"{enum_short_name(pole_pb2.LinkType.DESCRIPTOR, x.type).lower()} {x.target}"
                    for x in result.links
                ),
            ]
            for result in response.results
        ),
        empty=_lines("The PND holds nothing that matches.", made_for),
        note=_lines(
            "More matched: narrow the search or raise --max." if response.truncated else "", made_for
        ),
    )


def _lines(*texts: str) -> str:
    return "\n".join(t for t in texts if t)


@pnd.group("reconcile")
def reconcile() -> None:
    """Reconciliation of local records with what the PND holds."""


def _render_report(report: pb.Reconciliation) -> str:
    def aged(a: sync_pb2.AgedCount) -> str:
        return f"{a.count} (oldest {a.oldest_age.ToTimedelta()})" if a.count else "0"

    head = f"{report.name}  {'scheduled' if report.scheduled else 'by ' + report.requested_by}  " + (
        f"{format_time(report.complete_time, seconds=True)}; the PND holds {report.pnd_records} records"
    )
    table = render_table(
        ["region", "local", "in sync", "missing", "stale", "rejected", "held", "conflict"],
        [
            [
                _region(r.region),
                str(r.local_records),
                str(r.in_sync),
                aged(r.missing),
                aged(r.stale),
                aged(r.rejected),
                aged(r.held),
                aged(r.conflict),
            ]
            for r in report.regions
        ],
    )
    return f"{head}\n{table}"


@reconcile.command("run")
@format_option
@pass_cli
def reconcile_run(cli: CliContext, output_format: str) -> None:
    """Reconcile now and print the report (supervisors, national coordinators)."""
    report = cli.call(SERVICE, _stub(cli).RunReconciliation, pb.RunReconciliationRequest()).reconciliation
    emit_one(output_format, report, lambda: _render_report(report))


@reconcile.command("show")
@click.argument("name", default="reconciliations/latest")
@format_option
@pass_cli
def reconcile_show(cli: CliContext, name: str, output_format: str) -> None:
    """Print a report (the newest by default)."""
    if not name.startswith("reconciliations/"):
        name = f"reconciliations/{name}"
    report = cli.call(
        SERVICE, _stub(cli).GetReconciliation, pb.GetReconciliationRequest(name=name)
    ).reconciliation
    emit_one(output_format, report, lambda: _render_report(report))


ITEM_COLUMNS = ["record", "category", "local version", "pnd version", "age"]


@reconcile.command("items")
@click.argument("name", default="reconciliations/latest")
@click.option("--region", default="", help="Only this region.")
@click.option("--category", type=CATEGORY, help="Only this category.")
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@format_option
@pass_cli
def reconcile_items(
    cli: CliContext, name: str, region: str, category: int | None, limit: int, output_format: str
) -> None:
    """List the records a report found out of step, oldest change first.

    \b
    Example:
      toex pnd reconcile items --category missing
    """
    if not name.startswith("reconciliations/"):
        name = f"reconciliations/{name}"
    request = pb.ListReconciliationItemsRequest(
        parent=name,
        region=region.upper(),
        category=category or 0,  # type: ignore[arg-type]
        page_size=limit,
    )
    response = cli.call(SERVICE, _stub(cli).ListReconciliationItems, request)
    emit_list(
        output_format,
        response,
        ITEM_COLUMNS,
        (
            [
                i.record,
                enum_short_name(pb.ReconciliationCategory.DESCRIPTOR, i.category).lower(),
                str(i.local_version),
                str(i.pnd_version),
                str(i.age.ToTimedelta()),
            ]
            for i in response.items
        ),
        empty="Nothing out of step.",
    )


COMMANDS: list[click.Command] = [pnd]
