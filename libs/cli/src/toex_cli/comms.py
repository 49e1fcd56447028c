"""`toex comms ...`: the comms analysis service (call data, phone index, watchlists, adverts, ANPR)."""

from __future__ import annotations

import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import grpc
from toex.comms.v1 import comms_pb2 as pb
from toex.comms.v1 import comms_pb2_grpc
from toex.comms.v1 import resources_pb2 as res
from toex.type.v1 import security_pb2
from toex_kernel.accounts import AccountError, parse_account
from toex_kernel.regions import Region
from toex_kernel.timestamps import optional_timestamp as _ts

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
from toex_cli.params import JOB_NAME, EnumType, RegionType, enum_short_name, parse_when

SERVICE = "comms"
ENDPOINTS = (Endpoint(SERVICE, "127.0.0.1:50054", "The comms analysis service"),)
CHUNK = 1024 * 1024
WATCHLIST_KIND = EnumType(res.WatchlistKind.DESCRIPTOR)
HANDLING = {"P": security_pb2.HANDLING_CODE_P, "C": security_pb2.HANDLING_CODE_C}
EXPORTS = {
    "graphml": pb.EXPORT_FORMAT_GRAPHML,
    "i2": pb.EXPORT_FORMAT_I2_LINK_CSV,
    "svg": pb.EXPORT_FORMAT_SVG,
    "png": pb.EXPORT_FORMAT_PNG,
    "index-csv": pb.EXPORT_FORMAT_INDEX_CSV,
    "index-xlsx": pb.EXPORT_FORMAT_INDEX_XLSX,
}
# The kinds of file a mapping profile maps (`--kind`).
PROFILE_KINDS = {"cdr": res.DATASET_KIND_CDR, "adverts": res.DATASET_KIND_ADVERTS}
# `advert-networks --format ...` written to a file by the service's Export.
ADVERT_EXPORTS = {
    "graphml": pb.EXPORT_FORMAT_ADVERT_NETWORKS_GRAPHML,
    "i2": pb.EXPORT_FORMAT_ADVERT_NETWORKS_I2_LINK_CSV,
    "csv": pb.EXPORT_FORMAT_ADVERT_NETWORKS_CSV,
}


class WindowEdge(click.ParamType):
    """One end of an analysis window. A bare date is a whole UTC day: `--since 2024-03-04`
    starts at its first moment and `--until 2024-03-04` includes all of it. Anything else is
    an ISO time (UTC when it has no offset)."""

    name = "date"

    def __init__(self, end: bool) -> None:
        self.end = end

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if not isinstance(value, str):
            return value
        text = value.strip()
        try:
            day = date.fromisoformat(text) if len(text) == 10 else None
        except ValueError:
            day = None
        if day is not None:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if self.end else start
        try:
            return parse_when(text)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


SINCE, UNTIL = WindowEdge(end=False), WindowEdge(end=True)


def _stub(cli: CliContext) -> comms_pb2_grpc.CommsAnalysisServiceStub:
    return comms_pb2_grpc.CommsAnalysisServiceStub(cli.channel(SERVICE))


def _dataset_name(region: Region, value: str) -> str:
    return value if value.startswith("regions/") else f"regions/{region.value}/datasets/{value}"


def _targets(targets: tuple[str, ...], targets_file: Path | None) -> list[str]:
    found = [t for t in targets if t.strip()]
    if targets_file is not None:
        for line in targets_file.read_text(encoding="utf-8-sig").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                found.append(line)
    if not found:
        raise click.UsageError("give the targets with --target NUMBER (repeat) or --targets-file FILE")
    return found


def _scope_options(func: Any) -> Any:
    for option in reversed(
        [
            click.option(
                "--region", required=True, type=RegionType(), help="The region whose data to analyse."
            ),
            click.option(
                "--dataset",
                "datasets",
                multiple=True,
                metavar="ID",
                help="Only this dataset; repeat for several.",
            ),
            click.option("--job", default=None, type=JOB_NAME, help="Only datasets of this job."),
            click.option(
                "--since",
                type=SINCE,
                help="Only records from this time, or from the start of this date (UTC).",
            ),
            click.option(
                "--until",
                type=UNTIL,
                help="Only records before this time, or up to the end of this date (UTC).",
            ),
        ]
    ):
        func = option(func)
    return func


def _target_options(func: Any) -> Any:
    func = click.option(
        "--targets-file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="A file of numbers, one a line.",
    )(func)
    return click.option(
        "--target", "targets", multiple=True, metavar="NUMBER", help="A target number in any format; repeat."
    )(func)


def _scope(
    region: Region, datasets: tuple[str, ...], job: str | None, since: datetime | None, until: datetime | None
) -> pb.AnalysisScope:
    return pb.AnalysisScope(
        parent=f"regions/{region.value}",
        datasets=[_dataset_name(region, d) for d in datasets],
        job=job or "",
        start_time=_ts(since),
        end_time=_ts(until),
    )


@click.group(name="comms", short_help="Call data, phone index, watchlists, adverts and ANPR.")
def comms() -> None:
    """Communications analysis: import call data (CDR), ANPR reads and advert records, then
    analyse contact between target numbers, watch for contact between watchlists and export
    what a briefing needs. Reads need a purpose: toex --purpose "Op NAME" comms ...

    \b
    Examples:
      toex comms import-cdr calls.csv --region EMSOU --job EMSOU/JOB_ID
      toex --purpose "Op Kestrel" comms common-contacts --region EMSOU --targets-file targets.txt
      toex --purpose "Op Kestrel" comms export png --region EMSOU --targets-file targets.txt -o net.png
    """


def _upload(
    cli: CliContext, method: Any, request_type: Any, path: Path, header: pb.ImportHeader, filename: str = ""
) -> Any:
    size = path.stat().st_size
    header.size_bytes = size
    header.filename = filename or path.name

    sent = threading.Event()

    def requests(bar: Any) -> Iterator[Any]:
        yield request_type(header=header)
        with path.open("rb") as handle:
            while chunk := handle.read(CHUNK):
                bar.update(len(chunk))
                yield request_type(chunk=chunk)
        sent.set()

    make_bar: Any = click.progressbar
    progress = make_bar(length=size, label=f"uploading {path.name}", file=click.get_text_stream("stderr"))  # type: ignore[operator]
    try:
        with progress as bar:
            future = method.future(requests(bar), metadata=cli.metadata())
            while not sent.wait(0.2) and not future.done():
                pass
        if not future.done():
            click.echo(
                f"uploaded {size / 1e6:,.1f} MB; the service is reading, checking and indexing the rows...",
                err=True,
            )
        response = future.result()
    except grpc.RpcError as exc:
        raise rpc_failure(
            exc,
            service=SERVICE,
            address=cli.address(SERVICE),
            field_options={"header.parent": "--region", "header.profile": "--profile"},
        ) from None
    return response


def _import_options(func: Any) -> Any:
    for option in reversed(
        [
            click.argument("path", type=click.Path(exists=True, dir_okay=False, path_type=Path)),
            click.option("--region", required=True, type=RegionType(), help="The region that owns the data."),
            click.option("--job", default=None, type=JOB_NAME, help="The tasking job the data belongs to."),
            click.option(
                "--name", "display_name", default="", help="A display name (defaults to the file name)."
            ),
            click.option(
                "--encoding", default="", help="The file's encoding if not UTF-8 (e.g. cp1252, utf-16)."
            ),
            click.option(
                "--handling",
                type=click.Choice(sorted(HANDLING), case_sensitive=False),
                help="Handling code (default C).",
            ),
        ]
    ):
        func = option(func)
    return func


def _header(
    region: Region, job: str | None, display_name: str, encoding: str, handling: str | None, profile: str = ""
) -> pb.ImportHeader:
    return pb.ImportHeader(
        parent=f"regions/{region.value}",
        job=job or "",
        display_name=display_name,
        encoding=encoding,
        profile=profile,
        handling=HANDLING[handling.upper()] if handling else security_pb2.HANDLING_CODE_UNSPECIFIED,  # type: ignore[arg-type]
    )


def _print_import(response: Any, output_format: str) -> None:
    def table() -> str:
        d = response.dataset
        lines = [
            render_fields(
                [
                    ("dataset", d.name),
                    (
                        "status",
                        "already imported: nothing changed" if response.already_imported else "imported",
                    ),
                    ("rows", f"{d.rows_read} read, {d.rows_accepted} stored, {d.rows_rejected} rejected"),
                    ("distinct", str(d.distinct_identifiers)),
                    (
                        "period",
                        f"{format_time(d.first_record_time)} to {format_time(d.last_record_time)}"
                        if d.HasField("first_record_time")
                        else "no records",
                    ),
                ]
            )
        ]
        if response.rejections:
            lines.append("rejected rows (first 100; `toex comms rejections` lists all):")
            lines.append(
                render_table(["line", "reason"], [[str(r.line), r.reason] for r in response.rejections])
            )
        for c in getattr(response, "convoys", []):
            lines.append(
                f"convoy: {c.vrm_a} + {c.vrm_b}, {c.occasion_count} joint sightings on {c.day_count} days"
            )
        for f in getattr(response, "flags", []):
            reasons = ", ".join(
                enum_short_name(res.AdvertFlagReason.DESCRIPTOR, r).lower() for r in f.reasons
            )
            lines.append(f"flagged: {f.number} ({f.advert_count} adverts; {reasons})")
        return "\n".join(lines)

    emit_one(output_format, response, table)


@comms.command("import-cdr")
@_import_options
@click.option(
    "--profile",
    default="",
    help="Call data mapping profile (`toex comms profiles --kind cdr`); default canonical.",
)
@format_option
@pass_cli
def import_cdr(
    cli: CliContext,
    path: Path,
    region: Region,
    job: str | None,
    display_name: str,
    encoding: str,
    handling: str | None,
    profile: str,
    output_format: str,
) -> None:
    """Import a call data record CSV file (streamed; progress on stderr)."""
    header = _header(region, job, display_name, encoding, handling, profile)
    _print_import(_upload(cli, _stub(cli).ImportCdr, pb.ImportCdrRequest, path, header), output_format)


@comms.command("import-anpr")
@_import_options
@format_option
@pass_cli
def import_anpr(
    cli: CliContext,
    path: Path,
    region: Region,
    job: str | None,
    display_name: str,
    encoding: str,
    handling: str | None,
    output_format: str,
) -> None:
    """Import ANPR reads: columns vrm, camera_id, camera_location, read_time."""
    header = _header(region, job, display_name, encoding, handling)
    _print_import(_upload(cli, _stub(cli).ImportAnpr, pb.ImportAnprRequest, path, header), output_format)


def _advert_profile(cli: CliContext, region: Region, name: str) -> pb.MappingProfile:
    """The advert profile an import names (for `--images`: which columns hold the image and its
    hash, and the separator); the service refuses a profile of another kind itself."""
    if not name:  # canonical-adverts
        return pb.MappingProfile(columns={"image": "image", "image_hash": "image_hash"}, separator=",")
    response = cli.call(
        SERVICE,
        _stub(cli).ListMappingProfiles,
        pb.ListMappingProfilesRequest(parent=f"regions/{region.value}", kind=res.DATASET_KIND_ADVERTS),
    )
    for p in response.profiles:
        if p.name.rsplit("/", 1)[-1] == name:
            return p
    raise click.UsageError(
        f"no advert mapping profile {name!r} in {region.value} (`toex comms profiles --kind adverts`)"
    )


@comms.command("import-adverts")
@_import_options
@click.option(
    "--images",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of the images the file's `image` column names: each row with an image and no "
    "image_hash gets its perceptual hash worked out here (the images are never uploaded). With "
    "--profile, the columns the profile maps image and image_hash to.",
)
@click.option(
    "--profile",
    default="",
    help="Advert mapping profile naming the file's columns (`toex comms profiles --kind adverts`); "
    "default canonical-adverts.",
)
@format_option
@pass_cli
def import_adverts(
    cli: CliContext,
    path: Path,
    region: Region,
    job: str | None,
    display_name: str,
    encoding: str,
    handling: str | None,
    images: Path | None,
    profile: str,
    output_format: str,
) -> None:
    """Import advert records: columns number, advert_id, site, date, location, text; optional
    seen, image_hash, image (with --images), name, age, price, account. A file heading them
    otherwise (phone, ad_id, ...) or with another separator or time format is read through an
    advert mapping profile: --profile scraped-adverts, or one made with
    `toex comms create-profile ... --kind adverts`. Rejected rows are listed with their line.

    \b
    Examples:
      toex comms import-adverts adverts.csv --images ./pictures --region EMSOU --job EMSOU/JOB_ID
      toex comms import-adverts scrape.csv --profile scraped-adverts --region EMSOU
    """
    if images is None:
        header = _header(region, job, display_name, encoding, handling, profile)
        _print_import(
            _upload(cli, _stub(cli).ImportAdverts, pb.ImportAdvertsRequest, path, header), output_format
        )
        return
    from toex_cli.advert_images import add_image_hashes  # Pillow loads only when asked for

    columns = _advert_profile(cli, region, profile)
    if not columns.columns.get("image_hash"):
        # The service would not read the hashes worked out here.
        raise click.UsageError(
            f"--images: profile {profile!r} names no image_hash column for the hashes; "
            "use one that does (`toex comms profiles --kind adverts`)"
        )
    with tempfile.TemporaryDirectory(prefix="toex-adverts-") as work:
        hashed = Path(work) / path.name
        try:
            problems = add_image_hashes(
                path,
                hashed,
                images=images,
                column=columns.columns.get("image") or "image",
                hash_column=columns.columns["image_hash"],
                delimiter=columns.separator or ",",
                encoding=encoding or "utf-8-sig",
            )
        except (ValueError, UnicodeError) as exc:
            raise click.ClickException(f"{path.name}: {exc}") from None
        for line, reason in problems:
            click.echo(f"{path.name}: line {line}: {reason} (imported without an image hash)", err=True)
        # The copy is UTF-8 whatever the file was.
        header = _header(region, job, display_name, "", handling, profile)
        _print_import(
            _upload(cli, _stub(cli).ImportAdverts, pb.ImportAdvertsRequest, hashed, header, path.name),
            output_format,
        )


@comms.command("datasets")
@click.option(
    "--region", default="-", type=RegionType(allow_all=True), help="A region, or - for all you may see."
)
@format_option
@pass_cli
def datasets(cli: CliContext, region: Region | None, output_format: str) -> None:
    """List imported datasets, newest first (with a directory of installations, --region - asks
    every installation: `toex installations --help`)."""
    parent = f"regions/{region.value}" if region else "regions/-"

    def fetch() -> pb.ListDatasetsResponse:
        return cli.call(
            SERVICE, _stub(cli).ListDatasets, pb.ListDatasetsRequest(parent=parent, page_size=200)
        )

    gathered = cli.gather(SERVICE, fetch) if region is None else None
    data: Any
    if gathered is not None and gathered.fanned_out:
        merged = {d.name: d for answer in gathered.values() for d in answer.datasets}
        newest = sorted(merged.values(), key=lambda d: (d.create_time.seconds, d.create_time.nanos, d.name))
        response = pb.ListDatasetsResponse(datasets=newest[::-1])
        data = gathered.json(message_to_dict(response))
    else:
        response = gathered.values()[0] if gathered else fetch()
        data = response
    kind = res.DatasetKind.DESCRIPTOR
    emit_list(
        output_format,
        data,
        ["name", "kind", "job", "file", "stored", "rejected", "imported"],
        (
            [
                d.name,
                enum_short_name(kind, d.kind).lower(),
                d.job,
                d.source_filename,
                str(d.rows_accepted),
                str(d.rows_rejected),
                format_time(d.create_time),
            ]
            for d in response.datasets
        ),
    )
    if gathered:
        gathered.finish()


@comms.command("rejections")
@click.argument("dataset")
@click.option("--region", required=True, type=RegionType())
@format_option
@pass_cli
def rejections(cli: CliContext, dataset: str, region: Region, output_format: str) -> None:
    """Every rejected row of a dataset with its line number and reason."""
    token = ""
    rows: list[pb.RowRejection] = []
    while True:
        page = cli.call(
            SERVICE,
            _stub(cli).ListRejections,
            pb.ListRejectionsRequest(parent=_dataset_name(region, dataset), page_size=500, page_token=token),
        )
        rows.extend(page.rejections)
        token = page.next_page_token
        if not token:
            break
    emit_list(
        output_format,
        [message_to_dict(r) for r in rows],
        ["line", "reason", "row"],
        ([str(r.line), r.reason, r.raw[:80]] for r in rows),
    )


def _profile_kind(kind: int) -> str:
    return "adverts" if kind == res.DATASET_KIND_ADVERTS else "cdr"  # unspecified is call data


def _profile_columns(p: pb.MappingProfile) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(p.columns.items()))


@comms.command("profiles")
@click.option("--region", required=True, type=RegionType())
@click.option(
    "--kind",
    type=click.Choice(sorted(PROFILE_KINDS), case_sensitive=False),
    help="Only profiles for call data (cdr) or advert files (adverts).",
)
@format_option
@pass_cli
def profiles(cli: CliContext, region: Region, kind: str | None, output_format: str) -> None:
    """Column-mapping profiles: built-in ones and the region's, each with the kind of file it
    reads (cdr for `import-cdr --profile`, adverts for `import-adverts --profile`)."""
    response = cli.call(
        SERVICE,
        _stub(cli).ListMappingProfiles,
        pb.ListMappingProfilesRequest(
            parent=f"regions/{region.value}",
            kind=PROFILE_KINDS[kind.lower()] if kind else res.DATASET_KIND_UNSPECIFIED,  # type: ignore[arg-type]
        ),
    )
    emit_list(
        output_format,
        response,
        ["name", "kind", "columns", "time format", "separator"],
        (
            [
                p.name,
                _profile_kind(p.kind),
                _profile_columns(p),
                p.time_format or "ISO 8601",
                p.separator,
            ]
            for p in response.profiles
        ),
    )


def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for value in values:
        key, sep, target = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r}: expected NAME=VALUE", param_hint=option)
        found[key.strip()] = target.strip()
    return found


@comms.command("create-profile")
@click.argument("profile_id")
@click.option("--region", required=True, type=RegionType(), help="The region the profile is stored for.")
@click.option(
    "--kind",
    type=click.Choice(sorted(PROFILE_KINDS), case_sensitive=False),
    default="cdr",
    show_default=True,
    help="The files it reads: call data (cdr) or advert files (adverts).",
)
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="CANONICAL=HEADER",
    help="A canonical column and the file's header for it; repeat. cdr: start_time, end_time, "
    "duration, calling_number, called_number, event_type, calling_cell, called_cell, imei, imsi. "
    "adverts: number, advert_id, site, date, location, text, seen, image_hash, image, name, "
    "age, price, account.",
)
@click.option("--separator", default="", help="The field separator (default a comma).")
@click.option("--time-format", default="", help="strftime format of the times (default ISO 8601).")
@click.option("--time-zone", default="", help="IANA zone of times without an offset (default Europe/London).")
@click.option("--default-country", default="", help="Country of numbers without a code (default GB).")
@click.option(
    "--event-type",
    "event_types",
    multiple=True,
    metavar="VALUE=voice|sms|data",
    help="cdr only: what a value of the event_type column means; repeat.",
)
@format_option
@pass_cli
def create_profile(
    cli: CliContext,
    profile_id: str,
    region: Region,
    kind: str,
    columns: tuple[str, ...],
    separator: str,
    time_format: str,
    time_zone: str,
    default_country: str,
    event_types: tuple[str, ...],
    output_format: str,
) -> None:
    """Store a column-mapping profile for the region's imports of files that head, separate or
    format their columns otherwise. Required columns: start_time, calling_number and
    called_number (cdr); number and advert_id (adverts).

    \b
    Example:
      toex comms create-profile site-x --kind adverts --region EMSOU --separator ";" \\
        --column number=phone --column advert_id=ad_id --column date=first_seen
      toex comms import-adverts scrape.csv --profile site-x --region EMSOU
    """
    response = cli.call(
        SERVICE,
        _stub(cli).CreateMappingProfile,
        pb.CreateMappingProfileRequest(
            parent=f"regions/{region.value}",
            profile_id=profile_id,
            profile=pb.MappingProfile(
                kind=PROFILE_KINDS[kind.lower()],  # type: ignore[arg-type]
                columns=_pairs(columns, "--column"),
                separator=separator,
                time_format=time_format,
                time_zone=time_zone,
                default_country=default_country,
                event_types=_pairs(event_types, "--event-type"),
            ),
        ),
        field_options={
            "parent": "--region",
            "profile.kind": "--kind",
            "profile.separator": "--separator",
            "profile.time_zone": "--time-zone",
        },
    )
    p = response.profile
    emit_one(
        output_format,
        response,
        lambda: render_fields(
            [
                ("profile", p.name),
                ("kind", _profile_kind(p.kind)),
                ("columns", _profile_columns(p)),
                ("time format", p.time_format or "ISO 8601"),
                ("separator", p.separator),
            ]
        ),
    )


@comms.group("watchlist")
def watchlist() -> None:
    """Named lists of numbers; contact between two lists raises an event."""


@watchlist.command("create")
@click.argument("watchlist_id")
@click.option("--region", required=True, type=RegionType())
@click.option("--kind", required=True, type=WATCHLIST_KIND, help="What the list holds.")
@click.option("--name", "display_name", default="")
@format_option
@pass_cli
def watchlist_create(
    cli: CliContext, watchlist_id: str, region: Region, kind: int, display_name: str, output_format: str
) -> None:
    response = cli.call(
        SERVICE,
        _stub(cli).CreateWatchlist,
        pb.CreateWatchlistRequest(
            parent=f"regions/{region.value}",
            watchlist_id=watchlist_id,
            watchlist=pb.Watchlist(display_name=display_name, kind=kind),  # type: ignore[arg-type]
        ),
    )
    emit_one(output_format, response, lambda: f"created {response.watchlist.name}")


def _watchlist_file(path: Path) -> tuple[list[str], list[str]]:
    """Numbers and accounts of a list file, one a line (blank lines and `#` comments skipped):
    a line with `:` or `/` is an online account (a profile URL or platform:handle), any other a
    number. An account that does not read stops the command, naming its line."""
    numbers: list[str] = []
    accounts: list[str] = []
    problems: list[str] = []
    for line, raw in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        value = raw.strip()
        if not value or value.startswith("#"):
            continue
        if ":" in value or "/" in value:
            try:
                parse_account(value)
            except AccountError as exc:
                problems.append(f"{path.name}: line {line}: {exc}")
                continue
            accounts.append(value)
        else:
            numbers.append(value)
    if problems:
        raise click.ClickException("\n".join(problems))
    return numbers, accounts


@watchlist.command("add")
@click.argument("watchlist_id")
@click.argument("numbers", nargs=-1)
@click.option("--region", required=True, type=RegionType())
@click.option(
    "--account",
    "accounts",
    multiple=True,
    metavar="ACCOUNT",
    help="An online account (profile URL or platform:handle); repeat.",
)
@click.option(
    "--file",
    "list_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Numbers and accounts, one a line (a line with ':' or '/' is an account).",
)
@format_option
@pass_cli
def watchlist_add(
    cli: CliContext,
    watchlist_id: str,
    numbers: tuple[str, ...],
    region: Region,
    accounts: tuple[str, ...],
    list_file: Path | None,
    output_format: str,
) -> None:
    """Add numbers and online accounts to a list.

    \b
    Example:
      toex comms watchlist add suspects "07700 900300" --account instagram:some.name --region EMSOU
      toex comms watchlist add suspects --file suspects.txt --region EMSOU
    """
    from_file: tuple[list[str], list[str]] = _watchlist_file(list_file) if list_file else ([], [])
    all_numbers = [*numbers, *from_file[0]]
    all_accounts = [*accounts, *from_file[1]]
    if not all_numbers and not all_accounts:
        raise click.UsageError("give at least one number, --account or --file")
    response = cli.call(
        SERVICE,
        _stub(cli).AddWatchlistNumbers,
        pb.AddWatchlistNumbersRequest(
            name=f"regions/{region.value}/watchlists/{watchlist_id}",
            numbers=all_numbers,
            accounts=all_accounts,
        ),
    )
    emit_one(
        output_format,
        response,
        lambda: (
            f"{response.watchlist.name}: {len(response.watchlist.numbers)} numbers, "
            f"{len(response.watchlist.accounts)} accounts; "
            f"{len(response.contacts)} new watchlist contacts detected"
        ),
    )


@watchlist.command("list")
@click.option("--region", required=True, type=RegionType())
@format_option
@pass_cli
def watchlist_list(cli: CliContext, region: Region, output_format: str) -> None:
    response = cli.call(
        SERVICE, _stub(cli).ListWatchlists, pb.ListWatchlistsRequest(parent=f"regions/{region.value}")
    )
    emit_list(
        output_format,
        response,
        ["name", "kind", "numbers", "accounts"],
        (
            [
                w.name,
                enum_short_name(res.WatchlistKind.DESCRIPTOR, w.kind).lower(),
                " ".join(w.numbers),
                " ".join(w.accounts),
            ]
            for w in response.watchlists
        ),
    )


@watchlist.command("contacts")
@click.option("--region", required=True, type=RegionType())
@format_option
@pass_cli
def watchlist_contacts(cli: CliContext, region: Region, output_format: str) -> None:
    """Contacts detected between numbers on different watchlists, newest first."""
    response = cli.call(
        SERVICE,
        _stub(cli).ListWatchlistContacts,
        pb.ListWatchlistContactsRequest(parent=f"regions/{region.value}"),
    )
    kind = res.WatchlistKind.DESCRIPTOR
    emit_list(
        output_format,
        response,
        ["number a", "list a", "number b", "list b", "contacts", "first", "last", "dataset"],
        (
            [
                c.number_a,
                enum_short_name(kind, c.list_a.kind).lower(),
                c.number_b,
                enum_short_name(kind, c.list_b.kind).lower(),
                str(c.contact_count),
                format_time(c.first_contact_time),
                format_time(c.last_contact_time),
                c.dataset,
            ]
            for c in response.contacts
        ),
    )


@comms.command("index")
@click.argument("number")
@click.option("--region", default="-", type=RegionType(allow_all=True))
@format_option
@pass_cli
def index(cli: CliContext, number: str, region: Region | None, output_format: str) -> None:
    """Look a number up in the phone index, in any common format."""
    parent = f"regions/{region.value}" if region else "regions/-"
    response = cli.call(
        SERVICE,
        _stub(cli).SearchPhoneIndex,
        pb.SearchPhoneIndexRequest(parent=parent, number=number),
        field_options={"number": "NUMBER"},
    )

    def table() -> str:
        head = f"{response.number}: " + (
            "; ".join(a.label or a.entity_id for a in response.attributions) or "not attributed"
        )
        lists = ", ".join(w.name for w in response.watchlists)
        rows = render_table(
            ["dataset", "events", "calls", "texts", "first", "last"],
            [
                [
                    e.dataset,
                    str(e.event_count),
                    str(e.call_count),
                    str(e.sms_count),
                    format_time(e.first_seen_time),
                    format_time(e.last_seen_time),
                ]
                for e in response.entries
            ],
        )
        extra = (f"\nwatchlists: {lists}" if lists else "") + (
            f"\nadverts: {', '.join(response.advert_datasets)}" if response.advert_datasets else ""
        )
        return f"{head}{extra}\n{rows}"

    emit_one(output_format, response, table)


@comms.command("attribute")
@click.argument("identifier")
@click.option("--region", required=True, type=RegionType())
@click.option("--entity", "entity_id", required=True, help="The entity id the number or vehicle belongs to.")
@click.option("--label", default="", help="A label for people, e.g. the nominal's name.")
@click.option("--vehicle", is_flag=True, help="IDENTIFIER is a VRM, not a phone number.")
@format_option
@pass_cli
def attribute(
    cli: CliContext,
    identifier: str,
    region: Region,
    entity_id: str,
    label: str,
    vehicle: bool,
    output_format: str,
) -> None:
    """Attribute a number (or a vehicle) to an entity by hand."""
    response = cli.call(
        SERVICE,
        _stub(cli).AttributeIdentifier,
        pb.AttributeIdentifierRequest(
            parent=f"regions/{region.value}",
            identifier=identifier,
            vehicle=vehicle,
            entity_id=entity_id,
            label=label,
        ),
    )
    emit_one(output_format, response, lambda: f"{response.identifier} -> {response.attribution.entity_id}")


def _ties(ties: Any) -> str:
    return "; ".join(f"{t.target} ({t.contact_count})" for t in ties)


@comms.command("network")
@_scope_options
@_target_options
@click.option("--min-contacts", default=1, show_default=True)
@format_option
@pass_cli
def network(
    cli: CliContext,
    region: Region,
    datasets: tuple[str, ...],
    job: str | None,
    since: datetime | None,
    until: datetime | None,
    targets: tuple[str, ...],
    targets_file: Path | None,
    min_contacts: int,
    output_format: str,
) -> None:
    """The targets' contact network: edges weighted by calls, texts and duration."""
    response = cli.call(
        SERVICE,
        _stub(cli).GetContactNetwork,
        pb.GetContactNetworkRequest(
            scope=_scope(region, datasets, job, since, until),
            targets=_targets(targets, targets_file),
            min_contacts=min_contacts,
        ),
    )
    emit_list(
        output_format,
        response,
        ["number a", "number b", "contacts", "calls", "texts", "minutes", "first", "last"],
        (
            [
                e.number_a,
                e.number_b,
                str(e.contact_count),
                str(e.call_count),
                str(e.sms_count),
                str(e.total_duration_seconds // 60),
                format_time(e.first_contact_time),
                format_time(e.last_contact_time),
            ]
            for e in response.edges
        ),
    )


@comms.command("advert-networks")
@_scope_options
@click.option(
    "--call-dataset",
    "call_datasets",
    multiple=True,
    metavar="ID",
    help="Call data to find controllers and watchlist contacts in; default all of the same reach.",
)
@click.option("--min-adverts", default=2, show_default=True, help="Adverts in a network at least.")
@click.option("--min-numbers", default=2, show_default=True, help="Numbers in a network at least.")
@click.option("--limit", default=100, show_default=True)
@click.option("--why", is_flag=True, help="Also list why each advert belongs (table output).")
@click.option(
    "--format",
    "output_format",
    type=click.Choice([TABLE, JSON, *ADVERT_EXPORTS]),
    default=TABLE,
    show_default=True,
    envvar="TOEX_FORMAT",
    help="table or json on stdout; graphml, i2 (link table) or csv (one row per network) to a file.",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where an export is written (default: the suggested name).",
)
@pass_cli
def advert_networks(
    cli: CliContext,
    region: Region,
    datasets: tuple[str, ...],
    job: str | None,
    since: datetime | None,
    until: datetime | None,
    call_datasets: tuple[str, ...],
    min_adverts: int,
    min_numbers: int,
    limit: int,
    why: bool,
    output_format: str,
    output: Path | None,
) -> None:
    """Adverts joined into networks (shared number, near-duplicate text, same or near-same image,
    a common controller in the call data), ranked: an indicator of a child first, then the
    points of the indicators (one number for many workers, movement between towns, shared text
    templates, watchlists). --dataset names advert datasets; --since/--until are on posted time.

    \b
    Example:
      toex --purpose "Op Kestrel" comms advert-networks --region EMSOU --dataset ADVERTS_ID --why
      toex --purpose "Op Kestrel" comms advert-networks --region EMSOU --format i2 -o networks.csv
    """
    query = pb.FindAdvertNetworksRequest(
        scope=_scope(region, datasets, job, since, until),
        call_datasets=[_dataset_name(region, d) for d in call_datasets],
        min_adverts=min_adverts,
        min_numbers=min_numbers,
        limit=limit,
    )
    if output_format in ADVERT_EXPORTS:
        _download(
            cli,
            pb.ExportRequest(format=ADVERT_EXPORTS[output_format], advert_networks=query),  # type: ignore[arg-type]
            output,
            f"advert-networks-{output_format}",
        )
        return
    response = cli.call(SERVICE, _stub(cli).FindAdvertNetworks, query)
    emit_list(
        output_format,
        response,
        ["rank", "network", "child", "score", "adverts", "numbers", "towns", "indicators"],
        (
            [
                str(i),
                n.network_id,
                "CHILD" if n.minor else "",
                str(n.score),
                str(n.advert_count),
                " ".join(n.numbers),
                " -> ".join(m.location for m in n.movements),
                "; ".join(x.text for x in n.indicators),
            ]
            for i, n in enumerate(response.networks, start=1)
        ),
    )
    if why and output_format == "table":
        for n in response.networks:
            click.echo(f"\n{n.network_id}:")
            if n.accounts:
                click.echo(f"  accounts: {' '.join(n.accounts)}")
            for a in n.adverts:
                click.echo(f"  {a.advert_id}: {'; '.join(a.reasons)}")


@comms.command("common-contacts")
@_scope_options
@_target_options
@click.option(
    "--min-targets", default=2, show_default=True, help="In contact with at least this many targets."
)
@format_option
@pass_cli
def common_contacts(
    cli: CliContext,
    region: Region,
    datasets: tuple[str, ...],
    job: str | None,
    since: datetime | None,
    until: datetime | None,
    targets: tuple[str, ...],
    targets_file: Path | None,
    min_targets: int,
    output_format: str,
) -> None:
    """Numbers in contact with at least --min-targets targets, ranked."""
    response = cli.call(
        SERVICE,
        _stub(cli).FindCommonContacts,
        pb.FindCommonContactsRequest(
            scope=_scope(region, datasets, job, since, until),
            targets=_targets(targets, targets_file),
            min_targets=min_targets,
        ),
    )
    emit_list(
        output_format,
        response,
        ["number", "targets", "contacts", "attributed", "with"],
        (
            [
                c.number,
                str(c.target_count),
                str(c.contact_count),
                "; ".join(a.label or a.entity_id for a in c.attributions),
                _ties(c.ties),
            ]
            for c in response.contacts
        ),
    )


@comms.command("suspects")
@_scope_options
@_target_options
@click.option("--limit", default=25, show_default=True)
@format_option
@pass_cli
def suspects(
    cli: CliContext,
    region: Region,
    datasets: tuple[str, ...],
    job: str | None,
    since: datetime | None,
    until: datetime | None,
    targets: tuple[str, ...],
    targets_file: Path | None,
    limit: int,
    output_format: str,
) -> None:
    """Non-target numbers most strongly tied into the target group, with the reasons."""
    response = cli.call(
        SERVICE,
        _stub(cli).RankSuspects,
        pb.RankSuspectsRequest(
            scope=_scope(region, datasets, job, since, until),
            targets=_targets(targets, targets_file),
            limit=limit,
        ),
    )
    emit_list(
        output_format,
        response,
        ["number", "score", "reason"],
        ([s.number, f"{s.score:.1f}", s.reason] for s in response.suspects),
    )


@comms.command("profile")
@_scope_options
@click.argument("target")
@format_option
@pass_cli
def profile(
    cli: CliContext,
    region: Region,
    datasets: tuple[str, ...],
    job: str | None,
    since: datetime | None,
    until: datetime | None,
    target: str,
    output_format: str,
) -> None:
    """One target's top contacts, activity by hour and weekday, first and last contact."""
    r = cli.call(
        SERVICE,
        _stub(cli).GetTargetProfile,
        pb.GetTargetProfileRequest(scope=_scope(region, datasets, job, since, until), target=target),
    )

    def table() -> str:
        days = "Mon Tue Wed Thu Fri Sat Sun".split()
        return "\n".join(
            [
                render_fields(
                    [
                        ("target", r.target),
                        ("records", str(r.event_count)),
                        ("first", format_time(r.first_contact_time)),
                        ("last", format_time(r.last_contact_time)),
                        ("by hour", " ".join(f"{h:02d}:{n}" for h, n in enumerate(r.by_hour) if n)),
                        ("by weekday", " ".join(f"{days[d]}:{n}" for d, n in enumerate(r.by_weekday) if n)),
                        ("handsets", ", ".join(r.imeis)),
                    ]
                ),
                render_table(
                    ["contact", "contacts", "calls", "texts", "first", "last"],
                    [
                        [
                            t.target,
                            str(t.contact_count),
                            str(t.call_count),
                            str(t.sms_count),
                            format_time(t.first_contact_time),
                            format_time(t.last_contact_time),
                        ]
                        for t in r.top_contacts
                    ],
                ),
            ]
        )

    emit_one(output_format, r, table)


@comms.command("colocation")
@_scope_options
@_target_options
@click.option(
    "--window", "window_seconds", default=900, show_default=True, help="Seconds between the two records."
)
@format_option
@pass_cli
def colocation(
    cli: CliContext,
    region: Region,
    datasets: tuple[str, ...],
    job: str | None,
    since: datetime | None,
    until: datetime | None,
    targets: tuple[str, ...],
    targets_file: Path | None,
    window_seconds: int,
    output_format: str,
) -> None:
    """Numbers seen on the same cell as a target within the window."""
    response = cli.call(
        SERVICE,
        _stub(cli).FindColocations,
        pb.FindColocationsRequest(
            scope=_scope(region, datasets, job, since, until),
            targets=_targets(targets, targets_file),
            window_seconds=window_seconds,
        ),
    )
    emit_list(
        output_format,
        response,
        ["number a", "number b", "occasions", "cells", "first", "last", "in contact"],
        (
            [
                c.number_a,
                c.number_b,
                str(c.occasion_count),
                " ".join(c.cells),
                format_time(c.first_time),
                format_time(c.last_time),
                "yes" if c.in_contact else "",
            ]
            for c in response.colocations
        ),
    )


@comms.command("convoys")
@click.option("--region", required=True, type=RegionType())
@click.option("--dataset", "datasets", multiple=True, metavar="ID")
@click.option("--window", "window_seconds", default=180, show_default=True)
@click.option("--min-occasions", default=3, show_default=True)
@click.option("--vrm", "vrms", multiple=True, help="Only convoys with this vehicle; repeat.")
@format_option
@pass_cli
def convoys(
    cli: CliContext,
    region: Region,
    datasets: tuple[str, ...],
    window_seconds: int,
    min_occasions: int,
    vrms: tuple[str, ...],
    output_format: str,
) -> None:
    """Vehicles seen at the same cameras within a few minutes of each other, repeatedly."""
    response = cli.call(
        SERVICE,
        _stub(cli).FindConvoys,
        pb.FindConvoysRequest(
            scope=pb.AnprScope(
                parent=f"regions/{region.value}", datasets=[_dataset_name(region, d) for d in datasets]
            ),
            window_seconds=window_seconds,
            min_occasions=min_occasions,
            vrms=list(vrms),
        ),
    )
    emit_list(
        output_format,
        response,
        ["vehicle a", "vehicle b", "sightings", "days", "cameras", "first", "last"],
        (
            [
                c.vrm_a,
                c.vrm_b,
                str(c.occasion_count),
                str(c.day_count),
                " ".join(c.cameras[:6]),
                format_time(c.first_seen_time),
                format_time(c.last_seen_time),
            ]
            for c in response.convoys
        ),
    )


@comms.command("travel")
@click.argument("vrm")
@click.option("--region", required=True, type=RegionType())
@format_option
@pass_cli
def travel(cli: CliContext, vrm: str, region: Region, output_format: str) -> None:
    """A vehicle's regular locations and times, and its routes between cameras."""
    r = cli.call(
        SERVICE,
        _stub(cli).GetTravelPattern,
        pb.GetTravelPatternRequest(scope=pb.AnprScope(parent=f"regions/{region.value}"), vrm=vrm),
    )
    emit_one(
        output_format,
        r,
        lambda: (
            f"{r.vrm}: {r.read_count} reads\n"
            + render_table(
                ["camera", "location", "reads", "usual hour"],
                [[c.camera, c.location, str(c.read_count), f"{c.usual_hour:02d}:00"] for c in r.locations],
            )
            + "\n"
            + render_table(
                ["from", "to", "times", "median minutes"],
                [[x.from_camera, x.to_camera, str(x.count), str(x.median_seconds // 60)] for x in r.routes],
            )
        ),
    )


@comms.command("export")
@click.argument("kind", type=click.Choice(sorted(EXPORTS)))
@_scope_options
@click.option("--target", "targets", multiple=True, metavar="NUMBER")
@click.option("--targets-file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write (default: the suggested name).",
)
@pass_cli
def export(
    cli: CliContext,
    kind: str,
    region: Region,
    datasets: tuple[str, ...],
    job: str | None,
    since: datetime | None,
    until: datetime | None,
    targets: tuple[str, ...],
    targets_file: Path | None,
    output: Path | None,
) -> None:
    """Export the network (graphml, i2, svg, png) or the phone index (index-csv, index-xlsx)."""
    request = pb.ExportRequest(format=EXPORTS[kind], scope=_scope(region, datasets, job, since, until))  # type: ignore[arg-type]
    if not kind.startswith("index"):
        request.targets.extend(_targets(targets, targets_file))
    _download(cli, request, output, f"export-{kind}")


def _download(cli: CliContext, request: pb.ExportRequest, output: Path | None, fallback: str) -> None:
    """Stream an export to `output` or the suggested file name; nothing is left of a failed one."""
    target: Path | None = output
    handle = None
    size = 0
    try:
        chunks = _stub(cli).Export(request, metadata=tuple(cli.metadata()))
        for chunk in chunks:
            if handle is None:
                # only the suggested file name, never a directory the service names
                target = target or Path(Path(chunk.filename).name or fallback)
                handle = target.open("wb")
            handle.write(chunk.chunk)
            size += len(chunk.chunk)
    except grpc.RpcError as exc:
        if handle is not None:
            handle.close()
            assert target is not None
            target.unlink(missing_ok=True)  # no half-written file left behind
        raise rpc_failure(exc, service=SERVICE, address=cli.address(SERVICE)) from None
    if handle is not None:
        handle.close()
    click.echo(f"wrote {target} ({size} bytes)")


COMMANDS: list[click.Command] = [comms]
