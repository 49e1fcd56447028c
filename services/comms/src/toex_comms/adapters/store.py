"""Datasets on disk: one directory of Parquet parts per dataset under the data directory
(the DatasetStore port)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterable
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


class ParquetDatasetStore:
    def __init__(self, root: Path, batch_rows: int = ingest.BATCH_ROWS) -> None:
        self.root = root
        # Rows per batch while importing: bounds an import's memory.
        self.batch_rows = batch_rows
        (root / "datasets").mkdir(parents=True, exist_ok=True)
        (root / "uploads").mkdir(parents=True, exist_ok=True)
        (root / "staging").mkdir(parents=True, exist_ok=True)

    def path(self, dataset_id: str) -> Path:
        return self.root / "datasets" / dataset_id

    def upload_path(self) -> Path:
        return self.root / "uploads" / f"{uuid.uuid4().hex}.csv"

    def staging(self, dataset_id: str) -> Path:
        return self.root / "staging" / dataset_id

    def receive(self, encoding: str, max_bytes: int) -> ingest.UploadWriter:
        return ingest.UploadWriter(self.upload_path(), encoding, max_bytes)

    def ingest(
        self, kind: DatasetKind, upload: Upload, dataset_id: str, profile: MappingProfile | None
    ) -> IngestResult:
        assert isinstance(upload, ingest.UploadWriter), "an upload this store received"
        return ingest.ingest(kind, upload.path, self.staging(dataset_id), profile, batch_rows=self.batch_rows)

    def export_file(self) -> Path:
        handle = tempfile.NamedTemporaryFile(dir=self.root / "uploads", delete=False, suffix=".export")
        handle.close()
        return Path(handle.name)

    def publish(self, dataset_id: str) -> None:
        """Move a finished import into place (same file system: an atomic rename)."""
        self.staging(dataset_id).rename(self.path(dataset_id))

    def discard(self, dataset_id: str) -> None:
        shutil.rmtree(self.staging(dataset_id), ignore_errors=True)
        shutil.rmtree(self.path(dataset_id), ignore_errors=True)

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
