"""Streaming import of CSV files into columnar datasets (polars in, Parquet out).

One skeleton (`ingest_file`) reads every kind of file; a `FileReader` per kind (CDR, ANPR,
adverts) says what differs. The file is read in batches of rows (`LazyFrame.collect_batches`),
each batch is validated and written as its own Parquet part, so memory stays flat however large
the file is. Every row that is not stored is written to a rejection part with its line number
and reason.

Line numbers assume one record per physical line (the header is line 1), as call data exports
are; a quoted field holding a line break shifts the numbers of the rows after it.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import logging
import re
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
from toex_kernel.accounts import AccountError, parse_account
from toex_kernel.errors import ResourceExhausted

from toex_comms.domain.analysis import PAIR_SCHEMA, merge_pairs, pair_totals
from toex_comms.domain.identifiers import BadIdentifier, NumberNormaliser, normalise_vrm
from toex_comms.domain.model import DatasetKind, FileProblem, IngestResult
from toex_comms.domain.profiles import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE,
    EVENT_KINDS,
    REQUIRED_COLUMNS,
    MappingProfile,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
_END = object()
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
    # Since adverts kept what networks join on (parts written before have none of these).
    "seen": pl.Datetime("us", "UTC"),
    "image_hash": pl.UInt64,
    "name": pl.String,
    "age": pl.Int32,
    "price": pl.Float64,
    # An online account the advert names, `platform:handle` in normal form (toex_kernel.accounts).
    "account": pl.String,
    "line": pl.Int64,
}
PAIRS_FILE = "pairs.parquet"
REJECTION_SCHEMA: dict[str, Any] = {"line": pl.Int64, "reason": pl.String, "raw": pl.String}


# ---------------------------------------------------------------- a full disk

# What a write that found no room says (errno): the file system is full, the file grew past the
# size the process may write (RLIMIT_FSIZE), or the disk quota is spent.
NO_ROOM = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "a file grew past the largest size allowed",
    errno.EDQUOT: "the disk quota is spent",
}
# polars reports an I/O error of its writer as text ending "(os error 28)".
_OS_ERROR = re.compile(r"\(os error (\d+)\)")
FULL = (
    "the comms data directory is full ({reason}): nothing of this import was kept; free space "
    "there or enlarge its volume, then import the same file again"
)


def no_room(exc: BaseException) -> int | None:
    """The errno when `exc` says a write found no room on the disk, else None."""
    if isinstance(exc, OSError):
        return exc.errno if exc.errno in NO_ROOM else None
    if isinstance(exc, pl.exceptions.PolarsError):
        for found in _OS_ERROR.finditer(str(exc)):
            if int(found.group(1)) in NO_ROOM:
                return int(found.group(1))
    return None


@contextlib.contextmanager
def room_on_disk() -> Iterator[None]:
    """An import's write that found the data directory full becomes ResourceExhausted, which
    tells the caller what to do (rather than an internal error)."""
    try:
        yield
    except (OSError, pl.exceptions.PolarsError) as exc:
        code = no_room(exc)
        if code is None:
            raise
        log.warning("an import found the comms data directory full: %s", exc)
        raise ResourceExhausted(FULL.format(reason=NO_ROOM[code])) from exc


# ---------------------------------------------------------------- uploads


class UploadWriter:
    """Writes an uploaded file to disk as UTF-8, hashing the bytes as received.

    UTF-8 passes through untouched; UTF-16 (detected by its byte-order mark) and any named
    encoding are transcoded chunk by chunk, so the reader only ever sees UTF-8. A disk without
    room raises ResourceExhausted (`room_on_disk`)."""

    def __init__(self, path: Path, encoding: str, max_bytes: int) -> None:
        import hashlib

        self.path = path
        self.size = 0
        self.max_bytes = max_bytes
        self._hash = hashlib.sha256()
        self._encoding = (encoding or "").strip().lower()
        if self._encoding:
            try:
                codecs.lookup(self._encoding)
            except LookupError:
                raise FileProblem(f"unknown encoding {encoding!r}") from None
        with room_on_disk():
            self._file = path.open("wb")
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
        with room_on_disk():
            if self._decoder is not None:
                self._file.write(self._decoder.decode(chunk).encode("utf-8"))
            else:
                self._file.write(chunk)

    def close(self) -> str:
        with room_on_disk():  # closing writes what is buffered
            if self._decoder is not None:
                self._file.write(self._decoder.decode(b"", final=True).encode("utf-8"))
            self._file.close()
        return self._hash.hexdigest()

    @property
    def size_bytes(self) -> int:
        return self.path.stat().st_size

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._file.close()
        self.path.unlink(missing_ok=True)


# ---------------------------------------------------------------- reading


def _scan(path: Path, separator: str = ",", *, lossy: bool = True) -> pl.LazyFrame:
    """`lossy=False` only for a file already known to be valid UTF-8 (`_clean_utf8`)."""
    return pl.scan_csv(
        path,
        separator=separator,
        infer_schema=False,
        encoding="utf8-lossy" if lossy else "utf8",
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
        if no_room(exc) is not None:  # the disk, not the file (should polars spill)
            raise
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
        .str.to_datetime("%Y-%m-%dT%H:%M:%SZ", strict=False, time_unit="us", time_zone="UTC", cache=False)
    )


def _fast_duration_expr(name: str) -> pl.Expr:
    """Whole seconds (digits only, no spaces) within the range a float holds exactly (as the
    general parse reads them); null for anything else, which `_duration_expr` then reads."""
    seconds = pl.col(name).cast(pl.Int64, strict=False)
    return pl.when((seconds > -(2**53)) & (seconds < 2**53)).then(seconds)


def _parse_duration(frame: pl.DataFrame) -> pl.DataFrame:
    """Whole seconds by a plain cast when every value is in the range a float holds exactly
    (the usual case), else `_fast_duration_expr`; the general parse for the rest."""
    seconds = frame["duration"].cast(pl.Int64, strict=False)
    low, high = seconds.min(), seconds.max()
    if low is not None and high is not None and (low <= -(2**53) or high >= 2**53):  # type: ignore[operator]
        return _with_fallback(frame, SECONDS, _fast_duration_expr("duration"), _duration_expr, "duration")
    return _with_fallback(frame, SECONDS, pl.lit(seconds), _duration_expr, "duration")


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
    """Writes each part on a background thread (polars releases the GIL while it encodes), so
    the next batch is parsed meanwhile; at most one part waits, so memory stays bounded."""

    def __init__(self, directory: Path, stem: str) -> None:
        self.directory = directory
        self.stem = stem
        self.count = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"parquet-{stem}")
        self._pending: Future[None] | None = None

    def write(self, frame: pl.DataFrame, then: Callable[[pl.DataFrame], None] | None = None) -> None:
        """Write `frame` as the next part, then call `then(frame)` on the same thread."""
        if frame.height:
            self.wait()
            path = self.directory / f"{self.stem}-{self.count:05d}.parquet"

            def work() -> None:
                frame.write_parquet(path, compression="lz4")
                if then is not None:
                    then(frame)

            self._pending = self._pool.submit(work)
            self.count += 1

    def wait(self) -> None:
        if self._pending is not None:
            pending, self._pending = self._pending, None
            pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)


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


def _ahead(items: Iterator[T], prepare: Callable[[T], R]) -> Iterator[R]:
    """`prepare` each item on a background thread, one item ahead of the caller (polars and
    the caller's own polars work release the GIL, so the two overlap)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prepare") as pool:

        def step() -> tuple[bool, R | None]:
            item = next(items, _END)
            return (False, None) if item is _END else (True, prepare(item))  # type: ignore[arg-type]

        pending = pool.submit(step)
        while True:
            more, ready = pending.result()
            if not more:
                return
            pending = pool.submit(step)
            yield ready  # type: ignore[misc]


# ---------------------------------------------------------------- one skeleton for every kind of file


class FileReader:
    """What differs between the kinds of file an import reads: their columns, how a batch of
    rows is checked, and what is worked out once every row is stored. `ingest_file` does the
    rest the same way for every kind. One reader per file: it may keep state between batches."""

    # Names the file in messages ("the call data file lacks required columns: ...").
    what: str
    separator: str = ","
    # Stored column -> the file's column; an empty file column is not read.
    columns: dict[str, str]
    required: tuple[str, ...]
    # The columns the file has (stored column -> the file's), set before the first batch.
    present: dict[str, str]

    def choose(self, present: dict[str, str]) -> dict[str, str]:
        """The columns to read of those the file has."""
        return present

    def lossy(self, src: Path) -> bool:
        """Whether to read the file as lossy UTF-8 (then a row holding undecodable text is
        rejected) rather than as known-valid UTF-8."""
        return True

    def prepare(self, batch: pl.DataFrame) -> Any:
        """Work on the batch that may run ahead of `check`, on a background thread."""
        return None

    def check(self, batch: pl.DataFrame, prepared: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the rows to store, in the stored schema; the rows rejected: line, reason, raw)"""
        raise NotImplementedError

    def stored(self, rows: pl.DataFrame) -> None:
        """Called with each part of rows once written, on the writing thread."""

    def finish(self, out: Path, result: IngestResult) -> None:
        """Once every part is written: what is worked out from all the rows."""


def ingest_file(
    src: Path,
    out: Path,
    reader: FileReader,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Read `src` into `out/rows-*.parquet` and `out/rejections-*.parquet` a batch of rows at a
    time: the next batch is read and prepared while this one is checked, and each part is
    written while the next is checked. A disk without room raises ResourceExhausted; what was
    written is left for the caller to discard."""
    with room_on_disk():
        return _ingest_file(src, out, reader, batch_rows=batch_rows, progress=progress)


def _ingest_file(
    src: Path,
    out: Path,
    reader: FileReader,
    *,
    batch_rows: int,
    progress: Callable[[int], None] | None,
) -> IngestResult:
    header = _header(src, reader.separator)
    mapping = {c: s for c, s in reader.columns.items() if s}
    _check_columns(header, mapping, reader.required, reader.what)
    reader.present = present = reader.choose({c: s for c, s in mapping.items() if s in header})
    out.mkdir(parents=True, exist_ok=True)
    rows, rejects = PartWriter(out, "rows"), PartWriter(out, "rejections")
    result = IngestResult()
    lf = _scan(src, reader.separator, lossy=reader.lossy(src)).select(
        [pl.col(ROW), *(pl.col(s).alias(c) for c, s in present.items())]
    )

    def prepare(batch: pl.DataFrame) -> tuple[pl.DataFrame, Any]:
        return batch, reader.prepare(batch)

    try:
        for batch, prepared in _ahead(_batches(lf, batch_rows), prepare):
            result.rows_read += batch.height
            good, bad = reader.check(batch, prepared)
            rows.write(good, then=reader.stored)
            rejects.write(bad)
            result.rows_accepted += good.height
            _finish_rejections(out, result, bad)
            if progress:
                progress(result.rows_read)
    finally:
        rows.close()
        rejects.close()
    reader.finish(out, result)
    return result


def reader_for(kind: DatasetKind, profile: MappingProfile | None = None) -> FileReader:
    if kind is DatasetKind.CDR:
        assert profile is not None
        return CdrFile(profile)
    if kind is DatasetKind.ANPR:
        return AnprFile()
    return AdvertFile(profile)


def ingest(
    kind: DatasetKind, src: Path, out: Path, profile: MappingProfile | None, *, batch_rows: int = BATCH_ROWS
) -> IngestResult:
    return ingest_file(src, out, reader_for(kind, profile), batch_rows=batch_rows)


def _summarise(out: Path, result: IngestResult, identifier: str, time: str) -> None:
    """Distinct identifiers and the first and last time, from the parts written."""
    parts = sorted(out.glob("rows-*.parquet"))
    if parts:
        stats = (
            pl.scan_parquet(parts)
            .select(
                pl.col(identifier).n_unique().alias("n"),
                pl.col(time).min().alias("lo"),
                pl.col(time).max().alias("hi"),
            )
            .collect()
        )
        result.distinct_identifiers = int(stats["n"][0])
        result.first_time, result.last_time = stats["lo"][0], stats["hi"][0]


# ---------------------------------------------------------------- CDR


class CdrFile(FileReader):
    """Call data through a mapping profile. Besides the rows: the contact totals per pair of
    numbers (`pairs.parquet`) and the phone index (`numbers.parquet`)."""

    what = "call data"
    required = REQUIRED_COLUMNS

    def __init__(self, profile: MappingProfile) -> None:
        self.profile = profile
        self.separator = profile.separator
        self.columns = profile.columns
        self.normaliser = NumberNormaliser(profile.default_country)
        self.kinds = {k: EVENT_KINDS[v] for k, v in profile.all_event_types().items()}
        # raw value as read -> key (None when not a number); error text for the ones that are not
        self.raw_keys: dict[str, int | None] = {}
        self.raw_errors: dict[str, str] = {}
        # contact totals per pair of numbers, per part (summed at the end: no second pass)
        self.partial_pairs: list[pl.DataFrame] = []
        self.encoding_check = True

    def choose(self, present: dict[str, str]) -> dict[str, str]:
        if "end_time" in present and "duration" in present:
            present.pop("end_time")
        return present

    def lossy(self, src: Path) -> bool:
        # Per-row check for undecodable text only when the file has any (a whole-file pass over
        # the bytes is far cheaper than searching every cell of every row).
        self.encoding_check = not _clean_utf8(src)
        return self.encoding_check

    def prepare(self, batch: pl.DataFrame) -> tuple[pl.Series, pl.Series, dict[str, str]]:
        """The batch's distinct raw numbers, their keys and errors (phonenumbers for the new ones)."""
        raw_keys, raw_errors, normaliser = self.raw_keys, self.raw_errors, self.normaliser
        distinct = pl.concat([batch["calling_number"], batch["called_number"]]).drop_nulls().unique()
        fresh = distinct.filter(~distinct.is_in(pl.Series(list(raw_keys), dtype=pl.String).implode()))
        if fresh.len():
            stripped = fresh.str.strip_chars()
            normaliser.resolve(stripped.unique().to_list())
            for raw, text in zip(fresh.to_list(), stripped.to_list(), strict=True):
                raw_keys[raw] = normaliser.keys[text]
                if text in normaliser.errors:
                    raw_errors[raw] = normaliser.errors[text]
        values = distinct.to_list()
        keys = pl.Series([raw_keys[r] for r in values], dtype=pl.Int64)
        return distinct, keys, {r: raw_errors[r] for r in values if r in raw_errors}

    def _parse_time(self, frame: pl.DataFrame, column: str, source: str) -> pl.DataFrame:
        profile = self.profile
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

    def check(
        self, batch: pl.DataFrame, prepared: tuple[pl.Series, pl.Series, dict[str, str]]
    ) -> tuple[pl.DataFrame, pl.DataFrame]:
        distinct, keys, errors = prepared
        present, kinds = self.present, self.kinds
        frame = batch.with_columns(
            a=pl.col("calling_number").replace_strict(distinct, keys, default=None, return_dtype=pl.Int64),
            b=pl.col("called_number").replace_strict(distinct, keys, default=None, return_dtype=pl.Int64),
            a_cell=_clean("calling_cell") if "calling_cell" in present else pl.lit(None, pl.String),
            b_cell=_clean("called_cell") if "called_cell" in present else pl.lit(None, pl.String),
            imei=_clean("imei") if "imei" in present else pl.lit(None, pl.String),
            imsi=_clean("imsi") if "imsi" in present else pl.lit(None, pl.String),
            line=pl.col(ROW).cast(pl.Int64) + 2,
        )
        if "event_type" in present:
            # values exactly as listed (the usual case) directly; others trimmed and lower-cased
            frame = _with_fallback(
                frame,
                "kind",
                pl.col("event_type").replace_strict(kinds, default=None, return_dtype=pl.UInt8),
                lambda name: (
                    pl.col(name)
                    .str.strip_chars()
                    .str.to_lowercase()
                    .replace_strict(kinds, default=None, return_dtype=pl.UInt8)
                ),
                "event_type",
            )
        else:
            frame = frame.with_columns(kind=pl.lit(EVENT_KINDS["voice"], pl.UInt8))
        frame = self._parse_time(frame, "start", "start_time")
        if "duration" in present:
            frame = _parse_duration(frame)
        elif "end_time" in present:
            frame = self._parse_time(frame, "end", "end_time").with_columns(
                (pl.col("end") - pl.col("start")).dt.total_seconds().cast(pl.Int64).alias(SECONDS)
            )
        else:
            frame = frame.with_columns(pl.lit(0, pl.Int64).alias(SECONDS))
        undecodable = (
            pl.any_horizontal([pl.col(c).str.contains(REPLACEMENT, literal=True) for c in present])
            if self.encoding_check
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
        clean = not frame[REASON].any()
        good = (frame if clean else frame.filter(~pl.col(REASON))).select(
            [pl.col(SECONDS if c == "duration" else c).cast(t).alias(c) for c, t in CDR_SCHEMA.items()]
        )
        bad = (frame.clear() if clean else frame.filter(pl.col(REASON))).select(
            pl.col("line"), _reasons(checks).alias("reason"), _raw_expr(list(present)).alias("raw")
        )
        return good, bad

    def stored(self, rows: pl.DataFrame) -> None:
        self.partial_pairs.append(pair_totals(rows.lazy()).collect())

    def finish(self, out: Path, result: IngestResult) -> None:
        _write_number_index(out, result, self.partial_pairs)


def ingest_cdr(
    src: Path,
    out: Path,
    profile: MappingProfile,
    *,
    batch_rows: int = BATCH_ROWS,
    progress: Callable[[int], None] | None = None,
) -> IngestResult:
    """Read a CDR file into `out/rows-*.parquet`, `out/rejections-*.parquet`, `out/numbers.parquet`."""
    return ingest_file(src, out, CdrFile(profile), batch_rows=batch_rows, progress=progress)


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
    detail = pl.col(field).replace_strict(errors, default=None, return_dtype=pl.String)
    return (pl.col(col).is_null(), pl.concat_str(pl.lit(f"{field}: "), detail.fill_null("missing")))


def _write_number_index(out: Path, result: IngestResult, partial_pairs: list[pl.DataFrame]) -> None:
    """Contact totals per pair of numbers (`pairs.parquet`, see `analysis.pair_totals`), summed
    from the batches' totals, and the dataset's phone index (`numbers.parquet`) from them."""
    if not partial_pairs:
        pl.DataFrame(schema=NUMBER_INDEX_SCHEMA).write_parquet(out / "numbers.parquet")
        pl.DataFrame(schema=PAIR_SCHEMA).write_parquet(out / PAIRS_FILE)
        return
    pairs = (
        merge_pairs(pl.concat(partial_pairs).lazy())
        .select([pl.col(c).cast(t) for c, t in PAIR_SCHEMA.items()])
        .sort("x", "y")
        .collect()
    )
    index = index_from_pairs(pairs.lazy()).collect()
    index.write_parquet(out / "numbers.parquet")
    pairs.write_parquet(out / PAIRS_FILE, compression="lz4")
    result.distinct_identifiers = index.height
    result.first_time, result.last_time = pairs["first"].min(), pairs["last"].max()  # type: ignore[assignment]


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


def index_from_pairs(pairs: pl.LazyFrame) -> pl.LazyFrame:
    """`number_index` of the rows, from their `pair_totals`: each pair counts for both of its
    numbers (a record from a number to itself, twice, as in `number_index`)."""
    cols = ["contacts", "calls", "sms", "duration", "first", "last"]
    sides = pl.concat(
        [
            pairs.select(pl.col("x").alias("number"), *cols),
            pairs.select(pl.col("y").alias("number"), *cols),
        ]
    )
    return (
        sides.group_by("number")
        .agg(
            pl.col("contacts").sum().cast(pl.Int64).alias("events"),
            pl.col("calls").sum().cast(pl.Int64),
            pl.col("sms").sum().cast(pl.Int64),
            pl.col("duration").sum().cast(pl.Int64),
            pl.col("first").min(),
            pl.col("last").max(),
        )
        .sort("number")
    )


# ---------------------------------------------------------------- ANPR

ANPR_COLUMNS = {"vrm": "vrm", "camera": "camera_id", "location": "camera_location", "time": "read_time"}


class AnprFile(FileReader):
    """Columns: vrm, camera_id, camera_location (optional), read_time."""

    what = "ANPR"
    columns = ANPR_COLUMNS
    required = ("vrm", "camera", "time")

    def __init__(self, zone: str = "Europe/London") -> None:
        self.zone = zone
        self.vrms: dict[str, str | None] = {}

    def prepare(self, batch: pl.DataFrame) -> dict[str, str | None]:
        """The batch's raw registration marks, normalised (None: not one)."""
        distinct = batch["vrm"].drop_nulls().unique().to_list()
        for raw in distinct:
            if raw not in self.vrms:
                try:
                    self.vrms[raw] = normalise_vrm(raw)
                except BadIdentifier:
                    self.vrms[raw] = None
        return {r: self.vrms[r] for r in distinct}

    def check(self, batch: pl.DataFrame, lookup: dict[str, str | None]) -> tuple[pl.DataFrame, pl.DataFrame]:
        present = self.present
        frame = batch.with_columns(
            time_parsed=_time_expr("time", "", self.zone),
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
        return good, bad

    def finish(self, out: Path, result: IngestResult) -> None:
        _summarise(out, result, "vrm", "time")


def ingest_anpr(
    src: Path, out: Path, *, batch_rows: int = BATCH_ROWS, zone: str = "Europe/London"
) -> IngestResult:
    return ingest_file(src, out, AnprFile(zone), batch_rows=batch_rows)


# ---------------------------------------------------------------- adverts

# Stored column -> its canonical column (the header of a canonical advert file), which a mapping
# profile names the file's column for.
ADVERT_CANONICAL = {
    "number": "number",
    "advert_id": "advert_id",
    "site": "site",
    "posted": "date",
    "location": "location",
    "text": "text",
    "seen": "seen",
    "image_hash": "image_hash",
    "name": "name",
    "age": "age",
    "price": "price",
    "account": "account",
}
# A perceptual hash as written by imagehash (16 hex digits) or as a decimal integer.
_HEX_HASH = r"^(?:0x)?[0-9a-fA-F]{16}$"


class AdvertFile(FileReader):
    """Adverts through a mapping profile (default `canonical-adverts`). Canonical columns: number,
    advert_id, site, date, location, text; optional seen (a time), image_hash (a 64-bit
    perceptual hash, 16 hex digits as imagehash writes it, or a decimal integer), name and age
    claimed (age a whole number 0-120), price (a number, a leading currency sign allowed),
    account (a profile URL or platform:handle, kept as `platform:handle` in normal form). The
    profile's separator, time format and zone (date and seen) and default country apply."""

    what = "advert"
    required = ("number", "advert_id")

    def __init__(self, profile: MappingProfile | None = None) -> None:
        profile = profile or BUILTIN_PROFILES[DEFAULT_PROFILE[DatasetKind.ADVERTS]]
        self.profile = profile
        self.separator = profile.separator
        self.zone = profile.time_zone
        self.columns = {stored: profile.columns.get(c, "") for stored, c in ADVERT_CANONICAL.items()}
        self.normaliser = NumberNormaliser(profile.default_country)
        # The batch's accounts as written (trimmed): normal form, or why it is not an account.
        self.accounts: dict[str, str] = {}
        self.account_problems: dict[str, str] = {}

    def _time(self, name: str) -> pl.Expr:
        """A time in the profile's format, else ISO 8601 (the general forms stay readable)."""
        general = _time_expr(name, "", self.zone)
        fmt = self.profile.time_format
        return pl.coalesce(_time_expr(name, fmt, self.zone), general) if fmt else general

    def prepare(self, batch: pl.DataFrame) -> dict[str, int | None]:
        """The batch's raw numbers (trimmed), normalised (None: not a number)."""
        distinct = batch["number"].drop_nulls().str.strip_chars().unique().to_list()
        self.normaliser.resolve(distinct)
        if "account" in batch.columns:
            for written in batch["account"].drop_nulls().str.strip_chars().unique().to_list():
                if written and written not in self.accounts and written not in self.account_problems:
                    try:
                        self.accounts[written] = parse_account(written).key
                    except AccountError as exc:
                        self.account_problems[written] = str(exc)
        return {r: self.normaliser.keys[r] for r in distinct}

    def check(self, batch: pl.DataFrame, lookup: dict[str, int | None]) -> tuple[pl.DataFrame, pl.DataFrame]:
        present, zone = self.present, self.zone
        date_text = pl.col("posted").str.strip_chars() if "posted" in present else pl.lit(None, pl.String)
        frame = batch.with_columns(
            number_key=pl.col("number")
            .str.strip_chars()
            .replace_strict(lookup, default=None, return_dtype=pl.Int64),
            posted_at=pl.coalesce(
                self._time("posted") if "posted" in present else pl.lit(None, pl.Datetime("us", "UTC")),
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
                pl.col("_account_problem").is_not_null(),
                pl.concat_str(pl.lit("account: "), pl.col("_account_problem")),
            ),
            (
                date_text.is_not_null() & (date_text != "") & pl.col("posted_at").is_null(),
                pl.concat_str(pl.lit("date: not a valid date: "), date_text),
            ),
        ]
        extra = self._extras(present)
        frame = frame.with_columns(**{f"_{k}": v for k, (v, _) in extra.items()})
        written = _clean("account") if "account" in present else pl.lit(None, pl.String)
        frame = frame.with_columns(
            _account=written.replace_strict(self.accounts, default=None, return_dtype=pl.String),
            _account_problem=written.replace_strict(
                self.account_problems, default=None, return_dtype=pl.String
            ),
        )
        for name, (_, raw) in extra.items():
            checks.append(
                (
                    raw.is_not_null() & pl.col(f"_{name}").is_null(),
                    pl.concat_str(pl.lit(f"{name}: not valid: "), raw),
                )
            )
        frame = frame.with_columns(_reasons(checks).alias(REASON))
        good = frame.filter(pl.col(REASON).is_null()).select(
            pl.col("number_key").alias("number"),
            _clean("advert_id").alias("advert_id"),
            (_clean("site") if "site" in present else pl.lit(None, pl.String)).alias("site"),
            pl.col("posted_at").alias("posted"),
            (_clean("location") if "location" in present else pl.lit(None, pl.String)).alias("location"),
            (pl.col("text") if "text" in present else pl.lit(None, pl.String)).alias("text"),
            pl.col("_seen").alias("seen"),
            pl.col("_image_hash").alias("image_hash"),
            (_clean("name") if "name" in present else pl.lit(None, pl.String)).alias("name"),
            pl.col("_age").alias("age"),
            pl.col("_price").alias("price"),
            pl.col("_account").alias("account"),
            "line",
        )
        bad = frame.filter(pl.col(REASON).is_not_null()).select("line", pl.col(REASON).alias("reason"), "raw")
        return good, bad

    def _extras(self, present: dict[str, str]) -> dict[str, tuple[pl.Expr, pl.Expr]]:
        """The optional checked columns: name -> (the value, None when absent or invalid; the
        raw text, None when absent)."""
        raw = {
            k: (_clean(k) if k in present else pl.lit(None, pl.String))
            for k in ("seen", "image_hash", "age", "price")
        }
        hex_hash = raw["image_hash"].str.replace(r"^0x", "")
        image = (
            pl.when(raw["image_hash"].str.contains(_HEX_HASH))
            .then(hex_hash.str.to_integer(base=16, dtype=pl.UInt64, strict=False))
            .otherwise(raw["image_hash"].str.to_integer(base=10, dtype=pl.UInt64, strict=False))
        )
        age = raw["age"].str.to_integer(strict=False)
        price = (
            raw["price"].str.replace(r"^[£$€]", "").str.replace_all(",", "").cast(pl.Float64, strict=False)
        )
        seen = self._time("seen") if "seen" in present else pl.lit(None, pl.Datetime("us", "UTC"))
        return {
            "seen": (seen, raw["seen"]),
            "image_hash": (image, raw["image_hash"]),
            "age": (pl.when(age.is_between(0, 120)).then(age).cast(pl.Int32), raw["age"]),
            "price": (pl.when(price >= 0).then(price), raw["price"]),
        }

    def finish(self, out: Path, result: IngestResult) -> None:
        _summarise(out, result, "number", "posted")


def ingest_adverts(
    src: Path, out: Path, profile: MappingProfile | None = None, *, batch_rows: int = BATCH_ROWS
) -> IngestResult:
    """Read an advert file through `profile` (default `canonical-adverts`)."""
    return ingest_file(src, out, AdvertFile(profile), batch_rows=batch_rows)
