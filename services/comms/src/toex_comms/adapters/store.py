"""Datasets on disk: one directory of Parquet parts per dataset under the data directory
(the DatasetStore port).

    datasets/<dataset id>/                 published imports (the database lists them)
    uploads/<owner>_<uuid>.csv             uploads being received
    uploads/<owner>_<random>.export        exports being sent
    staging/<owner>_<dataset id>/          imports being read, published by a rename

Several processes (replicas, or one process's successive lives) may share the directory. Each
names what it writes with its owner, `<instance>_<pid>_<token>`: the host name (the pod's name
in Kubernetes), the process id and a token drawn at start. A process killed mid-import leaves
its upload and staged parts behind; `sweep` removes them.
"""

from __future__ import annotations

import errno
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from toex_comms.adapters import ingest
from toex_comms.adapters.ingest import (
    ADVERT_SCHEMA,
    ANPR_SCHEMA,
    CDR_SCHEMA,
    NUMBER_INDEX_SCHEMA,
    PAIRS_FILE,
)
from toex_comms.domain.analysis import PAIR_SCHEMA
from toex_comms.domain.model import DatasetKind, IngestResult
from toex_comms.domain.profiles import MappingProfile
from toex_comms.service_layer.ports import Upload

ROW_SCHEMAS: dict[DatasetKind, dict[str, Any]] = {
    DatasetKind.CDR: CDR_SCHEMA,
    DatasetKind.ANPR: ANPR_SCHEMA,
    DatasetKind.ADVERTS: ADVERT_SCHEMA,
}
# What another process left is removed once untouched this long: no import or export under way
# goes a day without writing, and none takes as long between publishing and committing.
ABANDONED_AFTER_SECONDS = 24 * 3600.0
# One token per process: stores of one process (tests build several) are one owner.
_TOKEN = secrets.token_hex(4)
_OWNED = re.compile(r"(?P<instance>[A-Za-z0-9.-]+)_(?P<pid>[0-9]+)_(?P<token>[0-9a-f]{8})_.+")
_DATASET_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class Owner:
    """The process that writes an upload, export or staged import."""

    instance: str
    pid: int
    token: str

    @classmethod
    def this_process(cls) -> Owner:
        instance = re.sub(r"[^A-Za-z0-9.-]+", "-", socket.gethostname())[:63] or "comms"
        return cls(instance, os.getpid(), _TOKEN)

    @classmethod
    def of(cls, name: str) -> Owner | None:
        """The owner a file or directory name carries (None: it carries none)."""
        found = _OWNED.fullmatch(name)
        if found is None:
            return None
        return cls(found["instance"], int(found["pid"]), found["token"])

    def __str__(self) -> str:
        return f"{self.instance}_{self.pid}_{self.token}"

    def earlier_life_of(self, current: Owner) -> bool:
        """Whether this owner is a process that ran before `current` in its place and has
        ended: the same instance (host name), another start token, and its process gone (or
        its id now `current`'s own, as in a restarted container)."""
        if self.instance != current.instance or self.token == current.token:
            return False
        return self.pid == current.pid or not _running(self.pid)


def _running(pid: int) -> bool:
    """Whether a process of that id runs on this host."""
    try:
        os.kill(pid, 0)  # signal 0: only asks
    except OSError as exc:
        return exc.errno != errno.ESRCH  # EPERM: it runs, as another user
    return True


def _last_touched(path: Path) -> float:
    """When `path` or, for a directory, what it holds directly last changed (the later of
    modification and status change: a rename sets the latter). Raises FileNotFoundError when
    it is gone."""
    st = path.lstat()
    latest = max(st.st_mtime, st.st_ctime)
    if path.is_dir() and not path.is_symlink():
        for child in path.iterdir():
            try:
                child_st = child.lstat()
            except FileNotFoundError:
                continue
            latest = max(latest, child_st.st_mtime, child_st.st_ctime)
    return latest


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


class ParquetDatasetStore:
    def __init__(
        self,
        root: Path,
        batch_rows: int = ingest.BATCH_ROWS,
        *,
        abandoned_after: float = ABANDONED_AFTER_SECONDS,
        owner: Owner | None = None,
    ) -> None:
        self.root = root
        # Rows per batch while importing: bounds an import's memory.
        self.batch_rows = batch_rows
        self.abandoned_after = abandoned_after
        self.owner = owner or Owner.this_process()
        (root / "datasets").mkdir(parents=True, exist_ok=True)
        (root / "uploads").mkdir(parents=True, exist_ok=True)
        (root / "staging").mkdir(parents=True, exist_ok=True)

    def path(self, dataset_id: str) -> Path:
        return self.root / "datasets" / dataset_id

    def upload_path(self) -> Path:
        return self.root / "uploads" / f"{self.owner}_{uuid.uuid4().hex}.csv"

    def staging(self, dataset_id: str) -> Path:
        return self.root / "staging" / f"{self.owner}_{dataset_id}"

    def receive(self, encoding: str, max_bytes: int) -> ingest.UploadWriter:
        return ingest.UploadWriter(self.upload_path(), encoding, max_bytes)

    def ingest(
        self, kind: DatasetKind, upload: Upload, dataset_id: str, profile: MappingProfile | None
    ) -> IngestResult:
        assert isinstance(upload, ingest.UploadWriter), "an upload this store received"
        # A full disk raises ResourceExhausted (ingest.room_on_disk); the caller discards.
        return ingest.ingest(kind, upload.path, self.staging(dataset_id), profile, batch_rows=self.batch_rows)

    def export_file(self) -> Path:
        handle = tempfile.NamedTemporaryFile(
            dir=self.root / "uploads", delete=False, prefix=f"{self.owner}_", suffix=".export"
        )
        handle.close()
        return Path(handle.name)

    def publish(self, dataset_id: str) -> None:
        """Move a finished import into place (same file system: an atomic rename)."""
        self.staging(dataset_id).rename(self.path(dataset_id))

    def discard(self, dataset_id: str) -> None:
        shutil.rmtree(self.staging(dataset_id), ignore_errors=True)
        shutil.rmtree(self.path(dataset_id), ignore_errors=True)

    # ------------------------------------------------------------ what killed imports leave

    def sweep(self, *, at_start: bool = False, now: float | None = None) -> list[Path]:
        """Remove the uploads, exports and staged imports of processes that no longer run: at
        start, at once those of this process's earlier lives (`Owner.earlier_life_of`); those
        of any other process (or of none named) once untouched for `abandoned_after` seconds,
        as a live replica's never are. This process's own are never touched. Returns what was
        removed."""
        now = time.time() if now is None else now
        removed = []
        for area in ("uploads", "staging"):
            for entry in sorted((self.root / area).iterdir()):
                owner = Owner.of(entry.name)
                if owner == self.owner:
                    continue
                try:
                    ended = at_start and owner is not None and owner.earlier_life_of(self.owner)
                    if ended or now - _last_touched(entry) >= self.abandoned_after:
                        _remove(entry)
                        removed.append(entry)
                except FileNotFoundError:  # its owner finished with it meanwhile
                    continue
        return removed

    def untouched_datasets(self, *, now: float | None = None) -> list[str]:
        """Ids of published datasets untouched for `abandoned_after` seconds: those the
        database does not list were published by an import killed before it committed (one
        commits seconds after publishing), so no one ever saw them."""
        now = time.time() if now is None else now
        found = []
        for entry in sorted((self.root / "datasets").iterdir()):
            if not _DATASET_ID.fullmatch(entry.name):
                continue
            try:
                if now - _last_touched(entry) >= self.abandoned_after:
                    found.append(entry.name)
            except FileNotFoundError:
                continue
        return found

    def remove_unlisted(self, dataset_ids: Iterable[str]) -> list[Path]:
        """Remove published datasets the database does not list (see `untouched_datasets`)."""
        removed = []
        for dataset_id in dataset_ids:
            if _DATASET_ID.fullmatch(dataset_id) and self.path(dataset_id).exists():
                _remove(self.path(dataset_id))
                removed.append(self.path(dataset_id))
        return removed

    def _parts(self, ids: Iterable[str], stem: str, staged: bool = False) -> list[Path]:
        out: list[Path] = []
        for dataset_id in ids:
            base = self.staging(dataset_id) if staged else self.path(dataset_id)
            out.extend(sorted(base.glob(f"{stem}-*.parquet")))
        return out

    def rows(
        self, ids: Iterable[str], kind: DatasetKind = DatasetKind.CDR, staged: bool = False
    ) -> pl.LazyFrame:
        parts = self._parts(ids, "rows", staged)
        if not parts:
            return pl.LazyFrame(schema=ROW_SCHEMAS[kind])
        return pl.scan_parquet(parts)

    def numbers(self, ids: Iterable[str]) -> pl.LazyFrame:
        files = [self.path(i) / "numbers.parquet" for i in ids]
        files = [f for f in files if f.exists()]
        if not files:
            return pl.LazyFrame(schema=NUMBER_INDEX_SCHEMA)
        return pl.concat(
            [pl.scan_parquet(f).with_columns(pl.lit(f.parent.name).alias("dataset_id")) for f in files]
        )

    def pairs(self, ids: Iterable[str]) -> pl.LazyFrame | None:
        """Contact totals per pair of numbers over the datasets; None when one of them has none
        (imported before they were kept), so the caller reads the records instead."""
        files = [self.path(i) / PAIRS_FILE for i in ids]
        if not all(f.exists() for f in files):
            return None
        if not files:
            return pl.LazyFrame(schema=PAIR_SCHEMA)
        return pl.scan_parquet(files)

    def rejections(self, dataset_id: str, offset: int, limit: int) -> list[tuple[int, str, str]]:
        parts = self._parts([dataset_id], "rejections")
        if not parts:
            return []
        frame = pl.scan_parquet(parts).sort("line").slice(offset, limit).collect()
        return list(frame.iter_rows())
