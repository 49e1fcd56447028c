"""Streaming import of CSV files into columnar datasets (polars in, Parquet out).

The file is read in batches of rows (`LazyFrame.collect_batches`), each batch is validated and
written as its own Parquet part, so memory stays flat however large the file is. Every row that
is not stored is written to a rejection part with its line number and reason.

Line numbers assume one record per physical line (the header is line 1), as call data exports
are; a quoted field holding a line break shifts the numbers of the rows after it.
"""

from __future__ import annotations

import codecs
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from toex_comms.analysis import PAIR_SCHEMA, pair_totals
from toex_comms.domain.identifiers import BadIdentifier, NumberNormaliser, normalise_vrm
from toex_comms.domain.profiles import EVENT_KINDS, REQUIRED_COLUMNS, MappingProfile

ROW = "__row"
REASON = "__reason"
BATCH_ROWS = 500_000
MAX_DURATION_SECONDS = 2 * 24 * 3600
MAX_RAW = 500
REPLACEMENT = "\ufffd"

CDR_SCHEMA: dict[str, Any] = {
    "start": pl.Datetime("us", "UTC"),
    "duration": pl.Int32,
    "a": pl.Int64,
    "b": pl.Int64,
    "kind": pl.UInt8,
    "a_cell": pl.String,
    "b_cell": pl.String,
    "imei": pl.String,
    "imsi": pl.String,
    "line": pl.Int64,
}
ANPR_SCHEMA: dict[str, Any] = {
    "time": pl.Datetime("us", "UTC"),
    "vrm": pl.String,
    "camera": pl.String,
    "location": pl.String,
    "line": pl.Int64,
}
ADVERT_SCHEMA: dict[str, Any] = {
    "number": pl.Int64,
    "advert_id": pl.String,
    "site": pl.String,
    "posted": pl.Datetime("us", "UTC"),
    "location": pl.String,
    "text": pl.String,
    "line": pl.Int64,
}
PAIRS_FILE = "pairs.parquet"
REJECTION_SCHEMA: dict[str, Any] = {"line": pl.Int64, "reason": pl.String, "raw": pl.String}


class FileProblem(ValueError):
    """The file as a whole cannot be imported (no header, missing columns, not CSV)."""


@dataclass
class IngestResult:
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    distinct_identifiers: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    sample_rejections: list[tuple[int, str, str]] = field(default_factory=list)


# ---------------------------------------------------------------- uploads


class UploadWriter:
    """Writes an uploaded file to disk as UTF-8, hashing the bytes as received.

    UTF-8 passes through untouched; UTF-16 (detected by its byte-order mark) and any named
    encoding are transcoded chunk by chunk, so the reader only ever sees UTF-8."""

    def __init__(self, path: Path, encoding: str, max_bytes: int) -> None:
        import hashlib

        self.path = path
        self.size = 0
        self.max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._file = path.open("wb")
        self._encoding = (encoding or "").strip().lower()
        if self._encoding:
            try:
                codecs.lookup(self._encoding)
            except LookupError:
                raise FileProblem(f"unknown encoding {encoding!r}") from None
        self._decoder: codecs.IncrementalDecoder | None = None
        self._started = False

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.max_bytes:
            raise FileProblem(f"the file is larger than the limit of {self.max_bytes} bytes")
        self._hash.update(chunk)
        if not self._started:
            self._started = True
            encoding = self._encoding
            if not encoding:
                if chunk.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                    encoding = "utf-16"
                else:
                    encoding = "utf-8-sig"
            if encoding in ("utf-8-sig",) and chunk.startswith(codecs.BOM_UTF8):
                chunk = chunk[len(codecs.BOM_UTF8) :]
            if encoding not in ("utf-8", "utf8", "utf-8-sig"):
                self._decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        if self._decoder is not None:
            self._file.write(self._decoder.decode(chunk).encode("utf-8"))
        else:
            self._file.write(chunk)

    def close(self) -> str:
        if self._decoder is not None:
            self._file.write(self._decoder.decode(b"", final=True).encode("utf-8"))
        self._file.close()
        return self._hash.hexdigest()


# ---------------------------------------------------------------- reading


def _scan(path: Path, separator: str = ",") -> pl.LazyFrame:
    return pl.scan_csv(
        path,
        separator=separator,
        infer_schema=False,
        encoding="utf8-lossy",
        truncate_ragged_lines=True,
        row_index_name=ROW,
        missing_columns="insert",
        raise_if_empty=False,
    )


def _header(path: Path, separator: str) -> list[str]:
    try:
        names = _scan(path, separator).collect_schema().names()
    except pl.exceptions.PolarsError as exc:
        raise FileProblem(f"the file cannot be read as CSV: {exc}") from None
    names = [n for n in names if n != ROW]
    if not names:
        raise FileProblem("the file is empty: expected a header line naming the columns")
    return names


def _batches(lf: pl.LazyFrame, rows: int) -> Iterator[pl.DataFrame]:
    try:
        yield from lf.collect_batches(chunk_size=rows)
    except pl.exceptions.PolarsError as exc:
        raise FileProblem(f"the file cannot be read as CSV: {exc}") from None


def _clean(name: str) -> pl.Expr:
    text = pl.col(name).str.strip_chars()
    return pl.when(text == "").then(None).otherwise(text)


def _time_expr(name: str, fmt: str, zone: str) -> pl.Expr:
    """Times with an offset are taken as given; times without one are read in `zone`."""
    text = pl.col(name).str.strip_chars()
    if fmt:
        naive = text.str.to_datetime(fmt, strict=False, time_unit="us")
        return naive.dt.replace_time_zone(
            zone, ambiguous="earliest", non_existent="null"
        ).dt.convert_time_zone("UTC")
    iso = text.str.replace("T", " ").str.replace(r"Z$", "+00:00").str.replace(r"\.\d+", "")
    with_offset = iso.str.to_datetime("%Y-%m-%d %H:%M:%S%z", strict=False, time_unit="us")
    local = (
        iso.str.to_datetime("%Y-%m-%d %H:%M:%S", strict=False, time_unit="us")
        .dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
        .dt.convert_time_zone("UTC")
    )
    return pl.coalesce(with_offset.dt.convert_time_zone("UTC"), local)


FAST = "__fast"
SECONDS = "__seconds"


def _fast_time_expr(name: str, fmt: str) -> pl.Expr:
    """The common exported form `2024-03-04T09:00:00Z`, parsed with one fixed format; null for
    anything else, which `_time_expr` then reads (the two agree wherever this one succeeds)."""
    if fmt:
        return pl.lit(None, pl.Datetime("us", "UTC"))
    return (
        pl.col(name)
        .str.strip_chars()
        .str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False, time_unit="us", time_zone="UTC")
    )


def _fast_duration_expr(name: str) -> pl.Expr:
    """Whole seconds within the range a float holds exactly (as the general parse reads them);
    null for anything else, which `_duration_expr` then reads."""
    seconds = pl.col(name).str.strip_chars().cast(pl.Int64, strict=False)
    return pl.when((seconds > -(2**53)) & (seconds < 2**53)).then(seconds)


def _with_fallback(
    frame: pl.DataFrame, column: str, fast: pl.Expr, slow: Callable[[str], pl.Expr], source: str
) -> pl.DataFrame:
    """`column` = the fast parse of `source`, and the slow one only for the rows the fast one
    left null (`source` itself is kept as read, for the rejection report)."""
    frame = frame.with_columns(fast.alias(column))
    if frame[column].null_count() <= frame[source].null_count():
        return frame
    return (
        frame.with_columns(pl.when(pl.col(column).is_null()).then(pl.col(source)).alias(FAST))
        .with_columns(pl.coalesce(pl.col(column), slow(FAST)).alias(column))
        .drop(FAST)
    )


def _duration_expr(name: str) -> pl.Expr:
    text = pl.col(name).str.strip_chars()
    seconds = text.cast(pl.Float64, strict=False).round(0).cast(pl.Int64, strict=False)
    hms = text.str.extract_groups(r"^(\d+):(\d{1,2}):(\d{1,2})$")
    ms = text.str.extract_groups(r"^(\d+):(\d{1,2})$")
    from_hms = (
        hms.struct.field("1").cast(pl.Int64) * 3600
        + hms.struct.field("2").cast(pl.Int64) * 60
        + hms.struct.field("3").cast(pl.Int64)
    )
    from_ms = ms.struct.field("1").cast(pl.Int64) * 60 + ms.struct.field("2").cast(pl.Int64)
    return pl.coalesce(seconds, from_hms, from_ms)


def _raw_expr(columns: list[str]) -> pl.Expr:
    return pl.concat_str([pl.col(c).fill_null("") for c in columns], separator=",").str.slice(0, MAX_RAW)


def _reasons(checks: list[tuple[pl.Expr, pl.Expr | str]]) -> pl.Expr:
    parts = [pl.when(bad).then(msg if isinstance(msg, pl.Expr) else pl.lit(msg)) for bad, msg in checks]
    joined = pl.concat_str(parts, separator="; ", ignore_nulls=True)
    return pl.when(joined == "").then(None).otherwise(joined)


class PartWriter:
    def __init__(self, directory: Path, stem: str) -> None:
        self.directory = directory
        self.stem = stem
        self.count = 0

    def write(self, frame: pl.DataFrame) -> None:
        if frame.height:
            frame.write_parquet(self.directory / f"{self.stem}-{self.count:05d}.parquet", compression="lz4")
            self.count += 1


def _finish_rejections(out: Path, result: IngestResult, rejected: pl.DataFrame) -> None:
    result.rows_rejected += rejected.height
    room = 100 - len(result.sample_rejections)
    if room > 0:
        result.sample_rejections.extend(rejected.head(room).iter_rows())


def _check_columns(header: list[str], mapping: dict[str, str], required: tuple[str, ...], what: str) -> None:
    missing = [f"{c} (column {mapping.get(c, c)!r})" for c in required if mapping.get(c, c) not in header]
    if missing:
        raise FileProblem(
            f"the {what} file lacks required columns: {', '.join(missing)}; its header has: "
            + ", ".join(header[:30])
        )


# ---------------------------------------------------------------- CDR


def ingest_cdr(
    src: Path,
    out: Path,
    profile: MappingProfile,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Read a CDR file into `out/rows-*.parquet`, `out/rejections-*.parquet`, `out/numbers.parquet`."""
    header = _header(src, profile.separator)
    mapping = {c: s for c, s in profile.columns.items() if s}
    _check_columns(header, mapping, REQUIRED_COLUMNS, "call data")
    present = {c: s for c, s in mapping.items() if s in header}
    if "end_time" in present and "duration" in present:
        present.pop("end_time")
    out.mkdir(parents=True, exist_ok=True)
    rows, rejects = PartWriter(out, "rows"), PartWriter(out, "rejections")
    normaliser = NumberNormaliser(profile.default_country)
    kinds = {k: EVENT_KINDS[v] for k, v in profile.all_event_types().items()}
    result = IngestResult()
    lf = _scan(src, profile.separator).select(
        [pl.col(ROW), *(pl.col(s).alias(c) for c, s in present.items())]
    )
    # Per-row check for undecodable text only when the file has any (a whole-file pass over
    # the bytes is far cheaper than searching every cell of every row).
    encoding_check = not _clean_utf8(src)

    def parse_time(frame: pl.DataFrame, column: str, source: str) -> pl.DataFrame:
        if profile.time_format:
            return frame.with_columns(
                _time_expr(source, profile.time_format, profile.time_zone).alias(column)
            )
        return _with_fallback(
            frame,
            column,
            _fast_time_expr(source, ""),
            lambda name: _time_expr(name, "", profile.time_zone),
            source,
        )

    for batch in _batches(lf, batch_rows):
        result.rows_read += batch.height
        distinct = (
            pl.concat([batch["calling_number"], batch["called_number"]])
            .drop_nulls()
            .str.strip_chars()
            .unique()
            .to_list()
        )
        normaliser.resolve(distinct)
        lookup = {r: normaliser.keys[r] for r in distinct}
        errors = {r: normaliser.errors[r] for r in distinct if r in normaliser.errors}
        kind = (
            pl.col("event_type")
            .str.strip_chars()
            .str.to_lowercase()
            .replace_strict(kinds, default=None, return_dtype=pl.UInt8)
            if "event_type" in present
            else pl.lit(EVENT_KINDS["voice"], pl.UInt8)
        )
        frame = batch.with_columns(
            a_raw=pl.col("calling_number").str.strip_chars(),
            b_raw=pl.col("called_number").str.strip_chars(),
        ).with_columns(
            a=pl.col("a_raw").replace_strict(lookup, default=None, return_dtype=pl.Int64),
            b=pl.col("b_raw").replace_strict(lookup, default=None, return_dtype=pl.Int64),
            kind=kind,
            a_cell=_clean("calling_cell") if "calling_cell" in present else pl.lit(None, pl.String),
            b_cell=_clean("called_cell") if "called_cell" in present else pl.lit(None, pl.String),
            imei=_clean("imei") if "imei" in present else pl.lit(None, pl.String),
            imsi=_clean("imsi") if "imsi" in present else pl.lit(None, pl.String),
            line=pl.col(ROW).cast(pl.Int64) + 2,
        )
        frame = parse_time(frame, "start", "start_time")
        if "duration" in present:
            frame = _with_fallback(
                frame, SECONDS, _fast_duration_expr("duration"), _duration_expr, "duration"
            )
        elif "end_time" in present:
            frame = parse_time(frame, "end", "end_time").with_columns(
                (pl.col("end") - pl.col("start")).dt.total_seconds().cast(pl.Int64).alias(SECONDS)
            )
        else:
            frame = frame.with_columns(pl.lit(0, pl.Int64).alias(SECONDS))
        undecodable = (
            pl.any_horizontal([pl.col(c).str.contains(REPLACEMENT, literal=True) for c in present])
            if encoding_check
            else pl.lit(False)
        )
        checks: list[tuple[pl.Expr, pl.Expr | str]] = [
            (undecodable, "text is not valid in the file's encoding"),
            (pl.col("start_time").is_null(), "start_time: missing"),
            (
                pl.col("start_time").is_not_null() & pl.col("start").is_null(),
                pl.concat_str(pl.lit("start_time: not a valid date and time: "), pl.col("start_time")),
            ),
            _number_error("a", "calling_number", errors),
            _number_error("b", "called_number", errors),
            (
                pl.col(SECONDS).is_null() & pl.col("start").is_not_null(),
                "duration: not a number of seconds or H:MM:SS (or end_time is not a valid time)",
            ),
            (
                (pl.col(SECONDS) < 0) | (pl.col(SECONDS) > MAX_DURATION_SECONDS),
                "duration: negative or longer than two days",
            ),
        ]
        if "event_type" in present:
            checks.append(
                (
                    pl.col("kind").is_null(),
                    pl.concat_str(
                        pl.lit("event_type: unknown value "), pl.col("event_type").fill_null("(empty)")
                    ),
                )
            )
        # Flag first (cheap booleans); words and the raw text only for the rows rejected.
        frame = frame.with_columns(
            pl.any_horizontal([bad.fill_null(False) for bad, _ in checks]).alias(REASON)
        )
        good = frame.filter(~pl.col(REASON)).select(
            [pl.col(SECONDS if c == "duration" else c).cast(t).alias(c) for c, t in CDR_SCHEMA.items()]
        )
        bad = frame.filter(pl.col(REASON)).select(
            pl.col("line"), _reasons(checks).alias("reason"), _raw_expr(list(present)).alias("raw")
        )
        rows.write(good)
        rejects.write(bad)
        result.rows_accepted += good.height
        _finish_rejections(out, result, bad)
        if progress:
            progress(result.rows_read)

    _write_number_index(out, result)
    return result


def _clean_utf8(path: Path, chunk: int = 1 << 22) -> bool:
    """True when the file is valid UTF-8 holding no replacement character, so that no cell read
    from it (lossily) can contain one."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict")
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            if block.isascii() and not decoder.getstate()[0]:
                continue
            try:
                if REPLACEMENT in decoder.decode(block):
                    return False
            except UnicodeDecodeError:
                return False
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return False
    return True


def _number_error(col: str, field: str, errors: dict[str, str]) -> tuple[pl.Expr, pl.Expr]:
    detail = pl.col(f"{col}_raw").replace_strict(errors, default=None, return_dtype=pl.String)
    return (pl.col(col).is_null(), pl.concat_str(pl.lit(f"{field}: "), detail.fill_null("missing")))


def _write_number_index(out: Path, result: IngestResult) -> None:
    """The dataset's phone index (`numbers.parquet`) and contact totals per pair of numbers
    (`pairs.parquet`, see `analysis.pair_totals`), in one pass over the stored rows."""
    parts = sorted(out.glob("rows-*.parquet"))
    if not parts:
        pl.DataFrame(schema=NUMBER_INDEX_SCHEMA).write_parquet(out / "numbers.parquet")
        pl.DataFrame(schema=PAIR_SCHEMA).write_parquet(out / PAIRS_FILE)
        return
    lf = pl.scan_parquet(parts)
    span = lf.select(pl.col("start").min().alias("lo"), pl.col("start").max().alias("hi"))
    index, pairs, bounds = pl.collect_all([number_index(lf), pair_totals(lf), span])
    index.write_parquet(out / "numbers.parquet")
    pairs.write_parquet(out / PAIRS_FILE, compression="lz4")
    result.distinct_identifiers = index.height
    result.first_time, result.last_time = bounds["lo"][0], bounds["hi"][0]


NUMBER_INDEX_SCHEMA: dict[str, Any] = {
    "number": pl.Int64,
    "events": pl.Int64,
    "calls": pl.Int64,
    "sms": pl.Int64,
    "duration": pl.Int64,
    "first": pl.Datetime("us", "UTC"),
    "last": pl.Datetime("us", "UTC"),
}


def number_index(lf: pl.LazyFrame) -> pl.LazyFrame:
    sides = pl.concat(
        [
            lf.select(pl.col("a").alias("number"), "start", "duration", "kind"),
            lf.select(pl.col("b").alias("number"), "start", "duration", "kind"),
        ]
    )
    return (
        sides.group_by("number")
        .agg(
            pl.len().cast(pl.Int64).alias("events"),
            (pl.col("kind") == 1).sum().cast(pl.Int64).alias("calls"),
            (pl.col("kind") == 2).sum().cast(pl.Int64).alias("sms"),
            pl.col("duration").sum().cast(pl.Int64).alias("duration"),
            pl.col("start").min().alias("first"),
            pl.col("start").max().alias("last"),
        )
        .sort("number")
    )


# ---------------------------------------------------------------- ANPR

ANPR_COLUMNS = {"vrm": "vrm", "camera": "camera_id", "location": "camera_location", "time": "read_time"}


def ingest_anpr(
    src: Path, out: Path, *, batch_rows: int = BATCH_ROWS, zone: str = "Europe/London"
) -> IngestResult:
    """Columns: vrm, camera_id, camera_location (optional), read_time."""
    header = _header(src, ",")
    _check_columns(header, ANPR_COLUMNS, ("vrm", "camera", "time"), "ANPR")
    out.mkdir(parents=True, exist_ok=True)
    rows, rejects = PartWriter(out, "rows"), PartWriter(out, "rejections")
    result = IngestResult()
    present = {k: v for k, v in ANPR_COLUMNS.items() if v in header}
    lf = _scan(src).select([pl.col(ROW), *(pl.col(v).alias(k) for k, v in present.items())])
    vrms: dict[str, str | None] = {}
    for batch in _batches(lf, batch_rows):
        result.rows_read += batch.height
        distinct = batch["vrm"].drop_nulls().unique().to_list()
        for raw in distinct:
            if raw not in vrms:
                try:
                    vrms[raw] = normalise_vrm(raw)
                except BadIdentifier:
                    vrms[raw] = None
        lookup = {r: vrms[r] for r in distinct}
        frame = batch.with_columns(
            time_parsed=_time_expr("time", "", zone),
            vrm_norm=pl.col("vrm").replace_strict(lookup, default=None, return_dtype=pl.String),
            camera_clean=_clean("camera"),
            location_clean=_clean("location") if "location" in present else pl.lit(None, pl.String),
            line=pl.col(ROW).cast(pl.Int64) + 2,
            raw=_raw_expr(list(present)),
        )
        checks: list[tuple[pl.Expr, pl.Expr | str]] = [
            (
                pl.col("raw").str.contains(REPLACEMENT, literal=True),
                "text is not valid in the file's encoding",
            ),
            (
                pl.col("vrm_norm").is_null(),
                pl.concat_str(pl.lit("vrm: not a registration mark: "), pl.col("vrm").fill_null("(empty)")),
            ),
            (pl.col("camera_clean").is_null(), "camera_id: missing"),
            (
                pl.col("time_parsed").is_null(),
                pl.concat_str(
                    pl.lit("read_time: not a valid date and time: "), pl.col("time").fill_null("(empty)")
                ),
            ),
        ]
        frame = frame.with_columns(_reasons(checks).alias(REASON))
        good = frame.filter(pl.col(REASON).is_null()).select(
            pl.col("time_parsed").alias("time"),
            pl.col("vrm_norm").alias("vrm"),
            pl.col("camera_clean").alias("camera"),
            pl.col("location_clean").alias("location"),
            "line",
        )
        bad = frame.filter(pl.col(REASON).is_not_null()).select("line", pl.col(REASON).alias("reason"), "raw")
        rows.write(good)
        rejects.write(bad)
        result.rows_accepted += good.height
        _finish_rejections(out, result, bad)
    parts = sorted(out.glob("rows-*.parquet"))
    if parts:
        stats = (
            pl.scan_parquet(parts)
            .select(
                pl.col("vrm").n_unique().alias("n"),
                pl.col("time").min().alias("lo"),
                pl.col("time").max().alias("hi"),
            )
            .collect()
        )
        result.distinct_identifiers = int(stats["n"][0])
        result.first_time, result.last_time = stats["lo"][0], stats["hi"][0]
    return result


# ---------------------------------------------------------------- adverts

ADVERT_COLUMNS = {
    "number": "number",
    "advert_id": "advert_id",
    "site": "site",
    "posted": "date",
    "location": "location",
    "text": "text",
}


def ingest_adverts(
    src: Path, out: Path, *, batch_rows: int = BATCH_ROWS, zone: str = "Europe/London"
) -> IngestResult:
    """Columns: number, advert_id, site, date, location, text."""
    header = _header(src, ",")
    _check_columns(header, ADVERT_COLUMNS, ("number", "advert_id"), "advert")
    out.mkdir(parents=True, exist_ok=True)
    rows, rejects = PartWriter(out, "rows"), PartWriter(out, "rejections")
    result = IngestResult()
    present = {k: v for k, v in ADVERT_COLUMNS.items() if v in header}
    lf = _scan(src).select([pl.col(ROW), *(pl.col(v).alias(k) for k, v in present.items())])
    normaliser = NumberNormaliser()
    for batch in _batches(lf, batch_rows):
        result.rows_read += batch.height
        distinct = batch["number"].drop_nulls().str.strip_chars().unique().to_list()
        normaliser.resolve(distinct)
        lookup = {r: normaliser.keys[r] for r in distinct}
        date_text = pl.col("posted").str.strip_chars() if "posted" in present else pl.lit(None, pl.String)
        frame = batch.with_columns(
            number_key=pl.col("number")
            .str.strip_chars()
            .replace_strict(lookup, default=None, return_dtype=pl.Int64),
            posted_at=pl.coalesce(
                _time_expr("posted", "", zone)
                if "posted" in present
                else pl.lit(None, pl.Datetime("us", "UTC")),
                date_text.str.to_date("%Y-%m-%d", strict=False)
                .cast(pl.Datetime("us"))
                .dt.replace_time_zone(zone, ambiguous="earliest", non_existent="null")
                .dt.convert_time_zone("UTC"),
            ),
            line=pl.col(ROW).cast(pl.Int64) + 2,
            raw=_raw_expr(list(present)),
        )
        checks: list[tuple[pl.Expr, pl.Expr | str]] = [
            (
                pl.col("raw").str.contains(REPLACEMENT, literal=True),
                "text is not valid in the file's encoding",
            ),
            (
                pl.col("number_key").is_null(),
                pl.concat_str(pl.lit("number: not a phone number: "), pl.col("number").fill_null("(empty)")),
            ),
            (_clean("advert_id").is_null(), "advert_id: missing"),
            (
                date_text.is_not_null() & (date_text != "") & pl.col("posted_at").is_null(),
                pl.concat_str(pl.lit("date: not a valid date: "), date_text),
            ),
        ]
        frame = frame.with_columns(_reasons(checks).alias(REASON))
        good = frame.filter(pl.col(REASON).is_null()).select(
            pl.col("number_key").alias("number"),
            _clean("advert_id").alias("advert_id"),
            (_clean("site") if "site" in present else pl.lit(None, pl.String)).alias("site"),
            pl.col("posted_at").alias("posted"),
            (_clean("location") if "location" in present else pl.lit(None, pl.String)).alias("location"),
            (pl.col("text") if "text" in present else pl.lit(None, pl.String)).alias("text"),
            "line",
        )
        bad = frame.filter(pl.col(REASON).is_not_null()).select("line", pl.col(REASON).alias("reason"), "raw")
        rows.write(good)
        rejects.write(bad)
        result.rows_accepted += good.height
        _finish_rejections(out, result, bad)
    parts = sorted(out.glob("rows-*.parquet"))
    if parts:
        stats = (
            pl.scan_parquet(parts)
            .select(
                pl.col("number").n_unique().alias("n"),
                pl.col("posted").min().alias("lo"),
                pl.col("posted").max().alias("hi"),
            )
            .collect()
        )
        result.distinct_identifiers = int(stats["n"][0])
        result.first_time, result.last_time = stats["lo"][0], stats["hi"][0]
    return result


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
