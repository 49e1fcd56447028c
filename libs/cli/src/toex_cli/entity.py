"""`toex entity ...`: the entity resolution service (persons and objects resolved from source
records, with explanations, reviews, merges and splits)."""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click
import grpc
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex.type.v1 import region_pb2, security_pb2
from toex_kernel.regions import Region

from toex_cli.context import CliContext, Endpoint, pass_cli
from toex_cli.errors import rpc_failure
from toex_cli.output import (
    JSON,
    TABLE,
    emit_list,
    emit_one,
    format_option,
    format_time,
    message_to_dict,
    render_fields,
    render_table,
)
from toex_cli.params import JOB_NAME, EnumType, RegionType, enum_short_name

SERVICE = "entity"
ENTITY_ADDR = "127.0.0.1:50052"
ENDPOINTS = (Endpoint(SERVICE, ENTITY_ADDR, "The entity resolution service"),)
# Records per IngestRecords stream (the service takes at most 50,000).
STREAM_SIZE = 20_000
REVIEW_STATE = EnumType(pb.ReviewState.DESCRIPTOR)

# CSV headers understood without --map (compared lower case, non-letters as "_").
HEADERS = {
    "given_name": ("given_name", "first_name", "firstname", "forename", "forenames", "given"),
    "middle_names": ("middle_names", "middle_name"),
    "surname": ("surname", "last_name", "lastname", "family_name", "familyname"),
    "birth_date": ("birth_date", "date_of_birth", "dob", "birthdate"),
    "gender": ("gender", "sex"),
    "street_number": ("street_number", "house_number", "number"),
    "address_1": ("address_1", "address", "address_line_1", "street", "address1"),
    "address_2": ("address_2", "address_line_2", "address2", "locality"),
    "town": ("town", "city", "suburb", "post_town"),
    "postcode": ("postcode", "post_code", "zip", "postal_code"),
    "phone": ("phone", "phone_number", "mobile", "telephone", "tel"),
    "email": ("email", "email_address"),
    "vrm": ("vrm", "registration", "number_plate"),
    "pnc": ("pnc", "pnc_id"),
    "pnd": ("pnd", "pnd_id"),
}
FIELDS = sorted(HEADERS)
_DMY = re.compile(r"^(\d{1,2})[/.-](\d{1,2})[/.-](\d{4})$")
_ASSESSMENT = "ABCDE"


def _stub(cli: CliContext) -> entity_pb2_grpc.EntityResolutionServiceStub:
    return entity_pb2_grpc.EntityResolutionServiceStub(cli.channel(SERVICE))


def _key(header: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", header.strip().lower()).strip("_")


def _region(value: int) -> str:
    return enum_short_name(region_pb2.Region.DESCRIPTOR, value) if value else ""


def _entity_name(text: str) -> str:
    text = text.strip()
    return text if text.startswith("entities/") else f"entities/{text}"


def _record_name(text: str) -> str:
    """`regions/EMSOU/records/ID` or `EMSOU/ID`."""
    text = text.strip()
    if text.startswith("regions/"):
        return text
    region, _, record = text.partition("/")
    if not record:
        raise click.BadParameter(f"expected regions/REGION/records/ID or REGION/ID, got {text!r}")
    return f"regions/{Region.parse(region).value}/records/{record}"


def _review_name(text: str) -> str:
    text = text.strip()
    if text.startswith("regions/"):
        return text
    region, _, task = text.partition("/")
    return f"regions/{Region.parse(region).value}/reviewTasks/{task}"


def parse_grading(text: str) -> pb.Grading:
    """`2B`, `2BP` or `2-B-C`: source evaluation, assessment, handling (default C)."""
    compact = re.sub(r"[^0-9A-Za-z]", "", text).upper()
    if not re.fullmatch(r"[123][A-E][PC]?", compact):
        raise click.BadParameter(
            f"expected a 3x5x2 grading like 2B or 1AP, got {text!r}", param_hint="--grading"
        )
    return pb.Grading(
        source_evaluation=int(compact[0]),  # type: ignore[arg-type]
        intelligence_assessment=_ASSESSMENT.index(compact[1]) + 1,  # type: ignore[arg-type]
        handling=security_pb2.HANDLING_CODE_P if compact[2:] == "P" else security_pb2.HANDLING_CODE_C,
    )


def _date(text: str) -> str:
    text = text.strip()
    match = _DMY.match(text)
    if match:
        day, month, year = match.groups()
        return f"{year}-{int(month):02d}-{int(day):02d}"
    if len(text) == 8 and text.isdigit():
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def column_mapping(headers: Sequence[str], overrides: Sequence[str], id_column: str) -> dict[str, str]:
    """Which CSV column feeds which person field (field -> header)."""
    mapping: dict[str, str] = {}
    by_key = {_key(h): h for h in headers}
    for field, names in HEADERS.items():
        for name in names:
            if name in by_key and by_key[name] != id_column:
                mapping[field] = by_key[name]
                break
    for item in overrides:
        header, _, field = item.partition("=")
        if not field or (field not in HEADERS and not field.startswith("identifier:")):
            raise click.BadParameter(
                f"expected HEADER=FIELD with FIELD one of {', '.join(FIELDS)} or identifier:SCHEME, got {item!r}",
                param_hint="--map",
            )
        if header not in headers:
            raise click.BadParameter(f"no column {header!r} in the file", param_hint="--map")
        mapping = {f: h for f, h in mapping.items() if h != header}
        mapping[field] = header
    return mapping


def person_from_row(row: dict[str, str], mapping: dict[str, str]) -> pb.Person:
    def get(field: str) -> str:
        header = mapping.get(field)
        return (row.get(header) or "").strip() if header else ""

    street = " ".join(p for p in (get("street_number"), get("address_1")) if p)
    lines = [p for p in (street, get("address_2")) if p]
    person = pb.Person(
        given_name=get("given_name"),
        middle_names=get("middle_names"),
        surname=get("surname"),
        birth_date=_date(get("birth_date")),
        gender={
            "m": pb.GENDER_MALE,
            "male": pb.GENDER_MALE,
            "f": pb.GENDER_FEMALE,
            "female": pb.GENDER_FEMALE,
        }.get(get("gender").lower(), pb.GENDER_UNSPECIFIED),
    )
    if lines or get("town") or get("postcode"):
        person.addresses.append(pb.Address(lines=lines, town=get("town"), postcode=get("postcode")))
    for field, scheme in (("pnc", "PNC"), ("pnd", "PND")):
        if get(field):
            person.identifiers.append(pb.OfficialIdentifier(scheme=scheme, value=get(field)))
    for field, header in mapping.items():
        if field.startswith("identifier:") and (row.get(header) or "").strip():
            person.identifiers.append(
                pb.OfficialIdentifier(scheme=field.split(":", 1)[1].upper(), value=row[header].strip())
            )
    if get("phone"):
        person.phone_numbers.append(get("phone"))
    if get("email"):
        person.emails.append(get("email"))
    if get("vrm"):
        person.vrms.append(get("vrm"))
    return person


@click.group(name="entity", short_help="Entity resolution: persons and objects from source records.")
def entity() -> None:
    """Entity resolution: resolve source records into persons and objects, see why records
    were linked, review doubtful pairs, merge and split.

    Entity names look like entities/ID (ID alone is accepted); record names like
    regions/EMSOU/records/ID (EMSOU/ID is accepted). Reads need a purpose:
    toex --purpose "Op NAME" entity ...

    \b
    Examples:
      toex --purpose "Op Kestrel" entity resolve-csv --region EMSOU --input people.csv \\
          --id-column id --output entities.csv
      toex --purpose "Op Kestrel" entity show ENTITY_ID
      toex --purpose "Op Kestrel" entity reviews --region EMSOU
    """


@entity.command("resolve-csv")
@click.option(
    "--input", "input_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--id-column", required=True, help="The column holding each record's id in its source.")
@click.option("--output", "output_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--region", required=True, type=RegionType(), help="The region that owns the records.")
@click.option("--source-system", default="csv", show_default=True, help="The records' source system.")
@click.option(
    "--grading", default="2B", show_default=True, help="3x5x2 grading of every record, e.g. 2B or 1AP."
)
@click.option(
    "--map",
    "overrides",
    multiple=True,
    metavar="HEADER=FIELD",
    help="Read FIELD from column HEADER (FIELD: "
    + ", ".join(FIELDS)
    + ", or identifier:SCHEME); repeatable.",
)
@click.option(
    "--wait-settled",
    is_flag=True,
    help="Then wait until the service has re-estimated its model from the stored records and "
    "re-resolved them under it (progress on stderr), and write the entities as they are then.",
)
@click.option(
    "--settle-timeout", default=1800.0, show_default=True, help="Seconds to wait for --wait-settled."
)
@pass_cli
def resolve_csv(
    cli: CliContext,
    input_path: Path,
    id_column: str,
    output_path: Path,
    region: Region,
    source_system: str,
    grading: str,
    overrides: tuple[str, ...],
    wait_settled: bool,
    settle_timeout: float,
) -> None:
    """Resolve a CSV of person records through the service; write `id,entity_id` per row.

    Columns are mapped by name (given name, surname, date of birth, address fields, postcode,
    phone...); use --map for other headers. Dates may be YYYY-MM-DD, YYYYMMDD or DD/MM/YYYY.

    \b
    Examples:
      toex entity resolve-csv --region EMSOU --input people.csv --id-column id --output out.csv
      toex entity resolve-csv --region ERSOU --input nominals.csv --id-column NOMINAL_REF \\
          --map "Forename=given_name" --map "PNC ID=identifier:PNC" --output out.csv
    """
    graded = parse_grading(grading)
    with input_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        headers = list(reader.fieldnames or [])
        if id_column not in headers:
            raise click.BadParameter(
                f"no column {id_column!r} (columns: {', '.join(headers)})", param_hint="--id-column"
            )
        mapping = column_mapping(headers, overrides, id_column)
        rows = list(reader)
    click.echo(
        "columns: " + ", ".join(f"{h} -> {f}" for f, h in sorted(mapping.items(), key=lambda i: i[1])),
        err=True,
    )
    stub = _stub(cli)
    parent = f"regions/{region.value}"
    written = refused = linked = review = 0
    with output_path.open("w", newline="", encoding="utf-8") as out:
        writer = csv.writer(out)
        writer.writerow(["id", "entity_id"])
        for start in range(0, len(rows), STREAM_SIZE):
            chunk = rows[start : start + STREAM_SIZE]

            def requests(chunk: list[dict[str, str]] = chunk) -> Iterator[pb.IngestRecordsRequest]:
                for row in chunk:
                    yield pb.IngestRecordsRequest(
                        parent=parent,
                        record=pb.SourceRecord(
                            ref=pb.SourceRecordRef(
                                source_system=source_system,
                                source_record_id=(row.get(id_column) or "").strip(),
                            ),
                            grading=graded,
                            person=person_from_row(row, mapping),
                        ),
                    )

            try:
                response = stub.IngestRecords(
                    requests(), metadata=tuple(cli.metadata()), timeout=max(cli.timeout, 600)
                )
            except grpc.RpcError as exc:
                raise rpc_failure(exc, service=SERVICE, address=cli.address(SERVICE)) from None
            for row, result in zip(chunk, response.results, strict=True):
                if result.error:
                    refused += 1
                    click.echo(f"row {row.get(id_column)!r} refused: {result.error}", err=True)
                    writer.writerow([row.get(id_column), ""])
                    continue
                writer.writerow([row.get(id_column), result.entity.removeprefix("entities/")])
                written += 1
            linked += response.linked_count
            review += response.review_count
    click.echo(
        f"{written} records resolved ({linked} linked to an existing entity, {review} sent to review), "
        f"{refused} refused; wrote {output_path}",
        err=True,
    )
    if wait_settled:
        _wait_settled(cli, stub, settle_timeout)
        # Re-sending a stored record changes nothing and answers with its entity as it is now.
        click.echo("reading the entities after settling", err=True)
        final = _ingest_ids(cli, stub, parent, rows, id_column, source_system, graded, mapping)
        with output_path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(["id", "entity_id"])
            writer.writerows(final)
        click.echo(f"wrote {output_path} ({len({e for _, e in final if e})} entities)", err=True)
    if refused:
        sys.exit(1)


def _ingest_ids(
    cli: CliContext,
    stub: Any,
    parent: str,
    rows: list[dict[str, str]],
    id_column: str,
    source_system: str,
    graded: Any,
    mapping: dict[str, str],
) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for start in range(0, len(rows), STREAM_SIZE):
        chunk = rows[start : start + STREAM_SIZE]
        requests = [
            pb.IngestRecordsRequest(
                parent=parent,
                record=pb.SourceRecord(
                    ref=pb.SourceRecordRef(
                        source_system=source_system, source_record_id=(row.get(id_column) or "").strip()
                    ),
                    grading=graded,
                    person=person_from_row(row, mapping),
                ),
            )
            for row in chunk
        ]
        try:
            response = stub.IngestRecords(
                iter(requests), metadata=tuple(cli.metadata()), timeout=max(cli.timeout, 600)
            )
        except grpc.RpcError as exc:
            raise rpc_failure(exc, service=SERVICE, address=cli.address(SERVICE)) from None
        for row, result in zip(chunk, response.results, strict=True):
            entity_id = "" if result.error else result.entity.removeprefix("entities/")
            out.append((row.get(id_column) or "", entity_id))
    return out


def status_line(status: pb.GetLearningStatusResponse) -> str:
    """One line on what the model's learning is doing, or did last."""
    if status.estimating or status.estimate_pending:
        return (
            f"re-estimating the model from {status.person_records} stored person records "
            f"(last estimate saw {status.records_at_estimate})"
        )
    if not status.reresolve_done:
        return (
            f"re-resolving under model {status.reresolve_model}: {status.reresolve_scanned} of "
            f"{status.person_records} records, {status.reresolve_merged} merges, "
            f"{status.reresolve_split} splits"
        )
    line = f"settled: model {status.active_model}"
    if status.reresolve_model:
        line += f", re-resolution made {status.reresolve_merged} merges and {status.reresolve_split} splits"
    if status.last_rejected_model:
        line += f" (model {status.last_rejected_model} failed its checks and was not used)"
    return line


def _wait_settled(cli: CliContext, stub: Any, timeout: float) -> None:
    """Poll the service's learning status until it has settled, printing progress."""
    import time

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        try:
            status = stub.GetLearningStatus(
                pb.GetLearningStatusRequest(), metadata=tuple(cli.metadata()), timeout=cli.timeout
            )
        except grpc.RpcError as exc:
            raise rpc_failure(exc, service=SERVICE, address=cli.address(SERVICE)) from None
        line = status_line(status)
        if line != last:
            click.echo(line, err=True)
            last = line
        if status.settled:
            return
        if time.monotonic() > deadline:
            raise click.ClickException(f"the service had not settled after {timeout:.0f} s")
        time.sleep(1.0)


@entity.command("learning")
@format_option
@pass_cli
def learning(cli: CliContext, output_format: str) -> None:
    """Show what the model's learning is doing: re-estimation, and re-resolution under the
    active model with the merges and splits it made.

    \b
    Example:
      toex entity learning
    """
    response = cli.call(SERVICE, _stub(cli).GetLearningStatus, pb.GetLearningStatusRequest())
    emit_one(output_format, response, lambda: status_line(response))


@entity.command("resolve")
@click.option("--region", required=True, type=RegionType())
@click.option("--source-system", required=True)
@click.option("--source-id", required=True, help="The record's id in its source system.")
@click.option("--grading", default="2B", show_default=True)
@click.option("--given-name", default="")
@click.option("--surname", default="")
@click.option("--dob", default="", help="Date of birth.")
@click.option("--postcode", default="")
@click.option("--address", default="", help="First address line.")
@click.option("--town", default="")
@click.option("--phone", "phones", multiple=True, help="A phone number (repeatable); alone, a phone record.")
@click.option("--vrm", default="", help="With no name: a vehicle record.")
@click.option("--pnc", default="", help="PNC id.")
@format_option
@pass_cli
def resolve(
    cli: CliContext,
    region: Region,
    source_system: str,
    source_id: str,
    grading: str,
    given_name: str,
    surname: str,
    dob: str,
    postcode: str,
    address: str,
    town: str,
    phones: tuple[str, ...],
    vrm: str,
    pnc: str,
    output_format: str,
) -> None:
    """Resolve one record and show the entity and why.

    \b
    Examples:
      toex --purpose "Op Kestrel" entity resolve --region EMSOU --source-system niche --source-id N1 \\
          --given-name Daniel --surname Harrington --dob 1994-03-12 --postcode "DE1 2AB"
      toex --purpose "Op Kestrel" entity resolve --region EMSOU --source-system comms --source-id T1 \\
          --phone "07700 900123"
    """
    record = pb.SourceRecord(
        ref=pb.SourceRecordRef(source_system=source_system, source_record_id=source_id),
        grading=parse_grading(grading),
    )
    if given_name or surname or dob or pnc:
        record.person.CopyFrom(
            pb.Person(
                given_name=given_name, surname=surname, birth_date=_date(dob), phone_numbers=list(phones)
            )
        )
        if address or town or postcode:
            record.person.addresses.append(
                pb.Address(lines=[address] if address else [], town=town, postcode=postcode)
            )
        if pnc:
            record.person.identifiers.append(pb.OfficialIdentifier(scheme="PNC", value=pnc))
        if vrm:
            record.person.vrms.append(vrm)
    elif phones:
        record.phone.CopyFrom(pb.Phone(number=phones[0]))
    elif vrm:
        record.vehicle.CopyFrom(pb.Vehicle(vrm=vrm))
    else:
        raise click.UsageError("give a person's details, --phone or --vrm")
    response = cli.call(
        SERVICE,
        _stub(cli).ResolveRecord,
        pb.ResolveRecordRequest(parent=f"regions/{region.value}", record=record),
    )

    def text() -> str:
        outcome = enum_short_name(pb.ResolveOutcome.DESCRIPTOR, response.outcome)
        lines = [f"{response.record.name}: {outcome} -> {response.entity.name}"]
        if response.explanation.text:
            lines.append(render_explanation(response.explanation))
        lines.extend(f"review task: {task}" for task in response.review_tasks)
        lines.extend(
            f"DECONFLICTION: {_region(d.region)} holds records on this entity; contact {d.contact_role}"
            for d in response.deconflictions
        )
        return "\n".join([*lines, "", render_entity(response.entity)])

    emit_one(output_format, response, text)


def render_explanation(e: pb.MatchExplanation) -> str:
    rows = [[c.comparison, c.level, f"{c.match_weight:+.2f}", c.value_a, c.value_b] for c in e.contributions]
    lines = [e.text, ""]
    if rows:
        lines.append(render_table(["comparison", "level", "weight", "a", "b"], rows))
        lines.append(
            f"prior {e.prior_match_weight:+.2f}  total {e.match_weight:+.2f}  probability {e.probability:.4f}"
        )
    return "\n".join(lines)


def render_entity(e: pb.Entity) -> str:
    records = render_table(
        ["record", "source", "grading", "ingested", "job", "label"],
        [
            [
                r.name,
                f"{r.ref.source_system}/{r.ref.source_record_id}",
                f"{int(r.grading.source_evaluation)}{'ABCDE'[r.grading.intelligence_assessment - 1] if r.grading.intelligence_assessment else ''}"
                f"{enum_short_name(security_pb2.HandlingCode.DESCRIPTOR, r.grading.handling) if r.grading.handling else ''}",
                format_time(r.ingest_time),
                r.job,
                _label(r),
            ]
            for r in e.records
        ],
    )
    history = "\n".join(
        f"{format_time(h.change_time)} {enum_short_name(pb.ChangeKind.DESCRIPTOR, h.kind)}"
        f"{' (undone)' if h.undone else ''} by {h.decided_by} [{h.change_id}]"
        f"{': ' + h.reason if h.reason else ''}"
        for h in e.history
    )
    others = "\n".join(f"{_region(d.region)}: contact {d.contact_role}" for d in e.other_regions)
    ids = e.identifiers
    identifiers = ", ".join([*ids.official_ids, *ids.e164_numbers, *ids.vrms, *ids.emails, *ids.handles])
    return render_fields(
        [
            ("name", e.name),
            ("redirected from", e.requested_name),
            ("type", enum_short_name(pb.RecordType.DESCRIPTOR, e.entity_type).lower()),
            ("display name", e.display_name),
            ("identifiers", identifiers),
            ("merged ids", ", ".join(e.merged_ids)),
            ("other regions", others),
            ("records", records),
            ("history", history),
        ]
    )


def _label(r: pb.SourceRecord) -> str:
    which = r.WhichOneof("content")
    if which == "person":
        p = r.person
        place = p.addresses[0].postcode if p.addresses else ""
        return " ".join(x for x in (p.given_name, p.surname.upper(), p.birth_date, place) if x)
    if which == "phone":
        return r.phone.e164
    if which == "vehicle":
        return " ".join(x for x in (r.vehicle.vrm, r.vehicle.make, r.vehicle.model) if x)
    if which == "online_account":
        return f"{r.online_account.platform}:{r.online_account.handle}"
    if which == "email":
        return r.email.address
    return ""


@entity.command("show")
@click.argument("name")
@format_option
@pass_cli
def show(cli: CliContext, name: str, output_format: str) -> None:
    """Show an entity: its records with provenance, other regions holding records, history.

    \b
    Examples:
      toex --purpose "Op Kestrel" entity show 3f2c9a...
      toex --purpose "Op Kestrel" entity show entities/3f2c9a... --format json
    """
    response = cli.call(SERVICE, _stub(cli).GetEntity, pb.GetEntityRequest(name=_entity_name(name)))
    emit_one(output_format, response.entity, lambda: render_entity(response.entity))


@entity.command("search")
@click.option("--name", default="", help='A name, e.g. "Daniel Harrington" or "harrington".')
@click.option("--dob", default="", help="Date of birth, with --name.")
@click.option("--phone", default="", help="A phone number in any format.")
@click.option("--vrm", default="")
@click.option("--handle", default="", help="An online handle, optionally platform:handle.")
@click.option("--email", default="")
@click.option("--limit", type=click.IntRange(1, 100), default=20, show_default=True)
@format_option
@pass_cli
def search(
    cli: CliContext,
    name: str,
    dob: str,
    phone: str,
    vrm: str,
    handle: str,
    email: str,
    limit: int,
    output_format: str,
) -> None:
    """Find entities by name and date of birth, phone, VRM, handle or email.

    \b
    Examples:
      toex --purpose "Op Kestrel" entity search --name "Daniel Harrington" --dob 1994-03-12
      toex --purpose "Op Kestrel" entity search --phone "+44 7700 900123"
    """
    request = pb.SearchEntitiesRequest(
        name=name,
        birth_date=_date(dob),
        phone_number=phone,
        vrm=vrm,
        handle=handle,
        email=email,
        page_size=limit,
    )
    response = cli.call(SERVICE, _stub(cli).SearchEntities, request)
    emit_list(
        output_format,
        response,
        ["entity", "score", "type", "label", "records", "other regions"],
        (
            [
                m.entity.name,
                f"{m.score:.2f}",
                enum_short_name(pb.RecordType.DESCRIPTOR, m.entity.entity_type).lower(),
                m.entity.display_name,
                str(len(m.entity.records)),
                ",".join(_region(d.region) for d in m.entity.other_regions),
            ]
            for m in response.matches
        ),
        empty="No entities match.",
    )


@entity.command("explain")
@click.argument("record_a")
@click.argument("record_b")
@format_option
@pass_cli
def explain(cli: CliContext, record_a: str, record_b: str, output_format: str) -> None:
    """Explain how two records compare: the match-weight waterfall and the probability.

    \b
    Example:
      toex --purpose "Op Kestrel" entity explain EMSOU/1a2b... EMSOU/3c4d...
    """
    response = cli.call(
        SERVICE,
        _stub(cli).ExplainMatch,
        pb.ExplainMatchRequest(record_a=_record_name(record_a), record_b=_record_name(record_b)),
    )
    emit_one(output_format, response.explanation, lambda: render_explanation(response.explanation))


@entity.command("reviews")
@click.option("--region", type=RegionType(allow_all=True), default="-", show_default=True)
@click.option("--state", type=REVIEW_STATE, default="open", show_default=True)
@click.option("--limit", type=click.IntRange(1, 500), default=50, show_default=True)
@format_option
@pass_cli
def reviews(cli: CliContext, region: Region | None, state: int, limit: int, output_format: str) -> None:
    """List review tasks: candidate pairs between the review and auto-link thresholds, oldest
    first. With a directory of installations, --region - asks every installation (a line on
    standard error for a region whose installation did not answer, and exit code 3).

    \b
    Example:
      toex --purpose "Op Kestrel" entity reviews --region EMSOU
    """
    request = pb.ListReviewTasksRequest(
        parent=f"regions/{region.value if region else '-'}",
        state=state,  # type: ignore[arg-type]
        page_size=limit,
    )

    def fetch() -> pb.ListReviewTasksResponse:
        return cli.call(SERVICE, _stub(cli).ListReviewTasks, request)

    gathered = cli.gather(SERVICE, fetch) if region is None else None
    data: Any
    if gathered is not None and gathered.fanned_out:
        merged = {t.name: t for answer in gathered.values() for t in answer.review_tasks}
        ordered = sorted(merged.values(), key=lambda t: (t.create_time.seconds, t.create_time.nanos, t.name))
        response = pb.ListReviewTasksResponse(review_tasks=ordered[:limit])
        data = gathered.json(message_to_dict(response))
    else:
        response = gathered.values()[0] if gathered else fetch()
        data = response
    emit_list(
        output_format,
        data,
        ["task", "state", "probability", "record", "candidate", "opened"],
        (
            [
                t.name,
                enum_short_name(pb.ReviewState.DESCRIPTOR, t.state),
                f"{t.explanation.probability:.3f}",
                t.record,
                t.candidate_record,
                format_time(t.create_time),
            ]
            for t in response.review_tasks
        ),
        empty="No review tasks.",
    )
    if gathered:
        gathered.finish()


@entity.command("decide")
@click.argument("task")
@click.option("--confirm", "decision", flag_value="confirm", help="The two records are the same: link them.")
@click.option("--reject", "decision", flag_value="reject", help="They are not: keep them apart for good.")
@click.option("--reason", required=True)
@format_option
@pass_cli
def decide(cli: CliContext, task: str, decision: str | None, reason: str, output_format: str) -> None:
    """Decide a review task.

    \b
    Examples:
      toex entity decide EMSOU/9f8e... --confirm --reason "same custody photograph"
      toex entity decide regions/EMSOU/reviewTasks/9f8e... --reject --reason "different fathers"
    """
    if decision is None:
        raise click.UsageError("choose --confirm or --reject")
    request = pb.DecideReviewRequest(
        name=_review_name(task),
        decision=pb.REVIEW_DECISION_CONFIRM if decision == "confirm" else pb.REVIEW_DECISION_REJECT,
        reason=reason,
    )
    response = cli.call(SERVICE, _stub(cli).DecideReview, request)
    emit_one(
        output_format,
        response,
        lambda: "\n".join(
            [
                f"{response.review_task.name}: {enum_short_name(pb.ReviewState.DESCRIPTOR, response.review_task.state)}",
                render_entity(response.entity),
            ]
        ),
    )


@entity.command("merge")
@click.argument("name")
@click.argument("others", nargs=-1, required=True)
@click.option("--reason", required=True)
@format_option
@pass_cli
def merge(cli: CliContext, name: str, others: tuple[str, ...], reason: str, output_format: str) -> None:
    """Merge OTHERS into NAME; their ids redirect to NAME. Prints the change id to undo it.

    \b
    Example:
      toex entity merge 3f2c... 9a8b... --reason "same PNC on both custody records"
    """
    response = cli.call(
        SERVICE,
        _stub(cli).MergeEntities,
        pb.MergeEntitiesRequest(
            name=_entity_name(name), others=[_entity_name(o) for o in others], reason=reason
        ),
    )
    emit_one(
        output_format,
        response,
        lambda: "\n".join(
            [
                f"merged; undo with: toex entity split {response.entity.name} --undo {response.change_id} --reason ...",
                render_entity(response.entity),
            ]
        ),
    )


@entity.command("split")
@click.argument("name")
@click.option("--record", "records", multiple=True, help="A record to move out (repeatable).")
@click.option(
    "--undo",
    "undo_change",
    default="",
    help="The change id of a merge into NAME, or of a split of NAME (a person's or a model's), to undo.",
)
@click.option("--reason", required=True)
@format_option
@pass_cli
def split(
    cli: CliContext, name: str, records: tuple[str, ...], undo_change: str, reason: str, output_format: str
) -> None:
    """Split records out of an entity into a new one, or undo a merge or a split exactly.

    Undoing a merge brings the merged entities back with their own ids and the records they
    had. Undoing a split (one a person made, or one re-resolution made under a new model:
    `entity show` lists its change id) puts the records split off back into NAME with the
    relations they took; the entity split off then redirects to NAME. It is refused while a
    reviewer keeps any of those records apart from NAME's, or once the entity split off has
    been merged elsewhere or holds other records.

    \b
    Examples:
      toex entity split 3f2c... --record EMSOU/1a2b... --reason "different date of birth"
      toex entity split 3f2c... --undo 77aa... --reason "wrong merge"
      toex entity split 3f2c... --undo 88bb... --reason "the model's split was wrong: same custody photo"
    """
    response = cli.call(
        SERVICE,
        _stub(cli).SplitEntity,
        pb.SplitEntityRequest(
            name=_entity_name(name),
            records=[_record_name(r) for r in records],
            undo_change=undo_change,
            reason=reason,
        ),
    )
    emit_one(
        output_format,
        response,
        lambda: "\n\n".join(render_entity(e) for e in [response.entity, *response.split_entities]),
    )


def render_mules(r: pb.AnalyseMulesResponse) -> str:
    lines = [
        f"{r.clusters_total} clusters scored, {r.findings_total} findings"
        + (f", {r.oversized_components} components too large to score" if r.oversized_components else "")
    ]
    for c in r.clusters:
        flag = "ALERT " if c.alert else ""
        lines.append("")
        lines.append(
            f"{flag}cluster score {c.score:.1f}: {len(c.holders)} holders, {len(c.accounts)} accounts, "
            f"{len(c.persons)} persons" + (f"; controller {c.controller}" if c.controller else "")
        )
        lines.extend(f"  - {reason}" for reason in c.reasons)
    if r.findings:
        lines.append("")
        lines.append(
            render_table(
                ["finding", "subject", "reason"],
                ([f.kind, f.subject, "; ".join(f.reasons)] for f in r.findings),
            )
        )
    return "\n".join(lines)


@entity.command("mules")
@click.option("--region", type=RegionType(), required=True, help="The region analysed.")
@click.option("--job", default=None, type=JOB_NAME, help="The job the analysis is for (its purpose).")
@click.option("--limit", type=click.IntRange(1, 1000), default=200, show_default=True)
@format_option
@pass_cli
def mules(cli: CliContext, region: Region, job: str | None, limit: int, output_format: str) -> None:
    """Money-mule analysis of a region's relations: clusters of account holders joined through
    shared phones, devices, addresses and associations, scored with their reasons (ALERT at the
    alert threshold), then the findings (shared keys, crowded addresses, accounts opened close
    together). Analysts, supervisors and the national team; leads to assess, not conclusions.

    \b
    Example:
      toex entity mules --region EMSOU --job EMSOU/4f1c...
    """
    request = pb.AnalyseMulesRequest(parent=f"regions/{region.value}", page_size=limit)
    response = cli.call(SERVICE, _stub(cli).AnalyseMules, request)
    emit_one(output_format, response, lambda: render_mules(response))


NEIGHBOURHOOD_FILES = {
    "graphml": pb.NEIGHBOURHOOD_FORMAT_GRAPHML,
    "i2": pb.NEIGHBOURHOOD_FORMAT_I2_LINK_CSV,
}


def render_neighbourhood(response: pb.GetNeighbourhoodResponse) -> str:
    lines = [f"{len(response.nodes)} nodes, {len(response.edges)} relations"]
    if response.truncated:
        lines[0] += " (truncated: raise --max-nodes to see more)"
    for node in response.nodes:
        lines.append(f"  [{node.depth}] {node.node_type:<14} {node.name}  {node.label}")
    for edge in response.edges:
        r = edge.relation
        lines.append(f"  {r.subject} -> {r.target}: {edge.reason}")
    return "\n".join(lines)


@entity.command("neighbourhood")
@click.argument("name")
@click.option("--depth", type=click.IntRange(1, 3), default=1, show_default=True)
@click.option("--max-nodes", type=click.IntRange(1, 500), default=100, show_default=True)
@click.option(
    "--format",
    "output_format",
    type=click.Choice([TABLE, JSON, *NEIGHBOURHOOD_FILES]),
    default=TABLE,
    show_default=True,
    help="table or json on stdout; graphml or i2 (a link table) to a file.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write graphml or i2 (default: the suggested name).",
)
@pass_cli
def neighbourhood(
    cli: CliContext, name: str, depth: int, max_nodes: int, output_format: str, output: Path | None
) -> None:
    """The graph around an entity: what its relations reach to a depth, each relation with its
    source record, grading and time span. Only what the caller may see is followed.

    \b
    Examples:
      toex --purpose "Op Kestrel" entity neighbourhood 3f2c9a... --depth 2
      toex --purpose "Op Kestrel" entity neighbourhood 3f2c9a... --depth 2 --format graphml
    """
    request = pb.GetNeighbourhoodRequest(
        name=_entity_name(name),
        depth=depth,
        max_nodes=max_nodes,
        format=NEIGHBOURHOOD_FILES.get(output_format, pb.NEIGHBOURHOOD_FORMAT_UNSPECIFIED),  # type: ignore[arg-type]
    )
    response = cli.call(SERVICE, _stub(cli).GetNeighbourhood, request)
    if output_format in NEIGHBOURHOOD_FILES:
        # only the suggested file name, never a directory the service names
        target = output or Path(Path(response.filename).name or f"neighbourhood.{output_format}")
        target.write_bytes(response.content)
        click.echo(f"wrote {target} ({len(response.content)} bytes)")
        return
    emit_one(output_format, response, lambda: render_neighbourhood(response))


COMMANDS: list[click.Command] = [entity]
