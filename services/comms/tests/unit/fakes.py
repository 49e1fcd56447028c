"""Hand-written fakes of the comms ports: the database and the dataset store, in memory."""

from __future__ import annotations

import codecs
import copy
import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from toex_common.events import EventEnvelope
from toex_common.testing.fakes import FakeUnitOfWorkBase
from toex_comms.adapters import integration
from toex_comms.adapters.ingest import NUMBER_INDEX_SCHEMA, number_index
from toex_comms.adapters.store import ROW_SCHEMAS
from toex_comms.domain.analysis import Network
from toex_comms.domain.commands import ExportFormat
from toex_comms.domain.model import (
    AdvertFlag,
    Attribution,
    Dataset,
    DatasetKind,
    FileProblem,
    IngestResult,
    KnownJob,
    Watchlist,
    WatchlistContact,
)
from toex_comms.domain.profiles import MappingProfile
from toex_comms.service_layer.ports import Members
from toex_kernel.regions import Region


class FakeCommsRepository:
    """Stores copies; keeps the unique keys the tables keep (the same file once per region, job
    and kind; a watchlist contact once per dataset, numbers and lists). Tracks the datasets it
    stores, as the real one does, so their domain events are published at commit."""

    def __init__(self, track: Callable[[Dataset], None] = lambda _: None) -> None:
        self._track = track
        self.datasets: dict[str, Dataset] = {}
        self.profiles: dict[tuple[Region, str], MappingProfile] = {}
        self.watchlists: dict[tuple[Region, str], Watchlist] = {}
        self.contacts: dict[tuple[str, str, int, str, int], WatchlistContact] = {}
        self.attributed: dict[tuple[Region, str], list[Attribution]] = {}
        self.flags: list[AdvertFlag] = []
        self.jobs: dict[str, KnownJob] = {}

    async def add_dataset(self, d: Dataset) -> None:
        if await self.find_same_file(d.region, d.job, d.kind, d.content_sha256):
            raise AssertionError("datasets_same_file violated")
        # Like the database: the dataset is stored, its pending domain events are not.
        stored = copy.deepcopy(d)
        stored.events = []
        self.datasets[d.id] = stored
        self._track(d)

    async def get_dataset(self, dataset_id: str) -> Dataset | None:
        return copy.deepcopy(self.datasets.get(dataset_id))

    async def find_same_file(self, region: Region, job: str, kind: DatasetKind, sha: str) -> Dataset | None:
        for d in self.datasets.values():
            if (d.region, d.job, d.kind, d.content_sha256) == (region, job, kind, sha):
                return copy.deepcopy(d)
        return None

    async def list_datasets(
        self,
        regions: list[Region] | None,
        job: str,
        kind: DatasetKind | None,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[Dataset]:
        found = [
            copy.deepcopy(d)
            for d in sorted(self.datasets.values(), key=lambda d: (d.created_at, d.id), reverse=True)
            if (regions is None or d.region in regions)
            and (not job or d.job == job)
            and (kind is None or d.kind is kind)
            and (after is None or (d.created_at, d.id) < after)
        ]
        return found[:limit]

    async def add_profile(self, region: Region, profile: MappingProfile, by: str, at: datetime) -> bool:
        if (region, profile.profile_id) in self.profiles:
            return False
        self.profiles[(region, profile.profile_id)] = profile
        return True

    async def list_profiles(self, region: Region) -> list[MappingProfile]:
        return [p for (r, _), p in sorted(self.profiles.items()) if r is region]

    async def add_watchlist(self, w: Watchlist) -> bool:
        if (w.region, w.id) in self.watchlists:
            return False
        self.watchlists[(w.region, w.id)] = copy.deepcopy(w)
        return True

    async def list_watchlists(self, region: Region, watchlist_id: str = "") -> list[Watchlist]:
        return [
            copy.deepcopy(w)
            for (r, wid), w in sorted(self.watchlists.items())
            if r is region and (not watchlist_id or wid == watchlist_id)
        ]

    async def add_numbers(self, region: Region, watchlist_id: str, numbers: Iterable[int]) -> None:
        w = self.watchlists[(region, watchlist_id)]
        w.numbers = sorted(set(w.numbers) | set(numbers))

    async def members(self, region: Region) -> Members:
        out: Members = {}
        for (r, wid), w in sorted(self.watchlists.items()):
            if r is region:
                for n in w.numbers:
                    out.setdefault(n, []).append((wid, w.kind))
        return out

    async def add_contacts(self, contacts: list[WatchlistContact]) -> list[str]:
        fresh = []
        for c in contacts:
            key = (c.dataset_id, c.list_a, c.number_a, c.list_b, c.number_b)
            if key not in self.contacts:
                self.contacts[key] = c
                fresh.append(c.id)
        return fresh

    def _of_job(self, region: Region, job: str) -> set[str]:
        return {d.id for d in self.datasets.values() if d.region is region and d.job == job}

    async def list_contacts(self, region: Region, limit: int, job: str = "") -> list[WatchlistContact]:
        of_job = self._of_job(region, job) if job else None
        found = sorted(
            (
                c
                for c in self.contacts.values()
                if c.region is region and (of_job is None or c.dataset_id in of_job)
            ),
            key=lambda c: c.detected_at,
            reverse=True,
        )
        return found[:limit]

    async def attribute(self, region: Region, a: Attribution) -> None:
        self.attributed.setdefault((region, a.identifier), []).append(a)

    async def attributions(self, region: Region, identifiers: Iterable[str]) -> dict[str, list[Attribution]]:
        out: dict[str, list[Attribution]] = {}
        for identifier in set(identifiers):
            found = [
                *self.attributed.get((region, identifier), []),
                *self.attributed.get((Region.NATIONAL, identifier), []),
            ]
            if found:
                out[identifier] = sorted(found, key=lambda a: a.recorded_at)
        return out

    async def add_flags(self, flags: list[AdvertFlag]) -> None:
        self.flags.extend(flags)

    async def list_flags(self, region: Region, dataset_id: str = "", job: str = "") -> list[AdvertFlag]:
        of_job = self._of_job(region, job) if job else None
        return [
            f
            for f in self.flags
            if f.region is region
            and (not dataset_id or f.dataset_id == dataset_id)
            and (of_job is None or f.dataset_id in of_job)
        ]

    async def upsert_job(self, job: KnownJob) -> None:
        self.jobs[job.name] = job

    async def get_job(self, name: str) -> KnownJob | None:
        return self.jobs.get(name)


class FakeCommsUnitOfWork(FakeUnitOfWorkBase):
    """Maps domain events with the service's real mapping: tests see the integration events."""

    def __init__(self) -> None:
        super().__init__()
        self.repo = FakeCommsRepository(track=self.track)

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)

    def event_types(self) -> list[str]:
        """The short type names of the events of committed work, in order."""
        return [e.event_type.rsplit(".", 1)[-1] for e in self.committed_events]


class FakeUpload:
    def __init__(self, encoding: str, max_bytes: int) -> None:
        if encoding.strip():
            try:
                codecs.lookup(encoding.strip())
            except LookupError:
                raise FileProblem(f"unknown encoding {encoding!r}") from None
        self.max_bytes = max_bytes
        self.data = b""
        self.closed = False
        self.discarded = False

    def write(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > self.max_bytes:
            raise FileProblem(f"the file is larger than the limit of {self.max_bytes} bytes")

    def close(self) -> str:
        self.closed = True
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    def discard(self) -> None:
        self.discarded = True


class FakeDatasetStore:
    """Datasets as frames in memory. No file is parsed: a test says what a file's bytes hold
    with `readable`; any other bytes are refused as a file that cannot be read."""

    def __init__(self) -> None:
        self.files: dict[bytes, tuple[pl.DataFrame, list[tuple[int, str, str]]]] = {}
        self.uploads: list[FakeUpload] = []
        self.staged: dict[str, pl.DataFrame] = {}
        self.published: dict[str, pl.DataFrame] = {}
        self.rejected: dict[str, list[tuple[int, str, str]]] = {}
        self.exports = 0

    def readable(
        self, content: bytes, rows: pl.DataFrame, rejections: Sequence[tuple[int, str, str]] = ()
    ) -> bytes:
        """Uploads of `content` import as `rows` (in the stored schema) and `rejections`."""
        self.files[content] = (rows, list(rejections))
        return content

    def receive(self, encoding: str, max_bytes: int) -> FakeUpload:
        upload = FakeUpload(encoding, max_bytes)
        self.uploads.append(upload)
        return upload

    def ingest(
        self, kind: DatasetKind, upload: Any, dataset_id: str, profile: MappingProfile | None
    ) -> IngestResult:
        assert upload in self.uploads and upload.closed and not upload.discarded
        if upload.data not in self.files:
            raise FileProblem("the file cannot be read as CSV")
        rows, rejections = self.files[upload.data]
        rows = rows.select([pl.col(c).cast(t) for c, t in ROW_SCHEMAS[kind].items()])
        self.staged[dataset_id] = rows
        self.rejected[dataset_id] = rejections
        times = rows["start" if kind is DatasetKind.CDR else "time" if kind is DatasetKind.ANPR else "posted"]
        return IngestResult(
            rows_read=rows.height + len(rejections),
            rows_accepted=rows.height,
            rows_rejected=len(rejections),
            first_time=times.min(),  # type: ignore[arg-type]
            last_time=times.max(),  # type: ignore[arg-type]
            sample_rejections=rejections[:100],
        )

    def publish(self, dataset_id: str) -> None:
        self.published[dataset_id] = self.staged.pop(dataset_id)

    def discard(self, dataset_id: str) -> None:
        self.staged.pop(dataset_id, None)
        self.published.pop(dataset_id, None)
        self.rejected.pop(dataset_id, None)

    def add(self, dataset_id: str, rows: pl.DataFrame, kind: DatasetKind = DatasetKind.CDR) -> None:
        """A dataset imported before the test."""
        self.published[dataset_id] = rows.select([pl.col(c).cast(t) for c, t in ROW_SCHEMAS[kind].items()])

    def rows(
        self, ids: Iterable[str], kind: DatasetKind = DatasetKind.CDR, staged: bool = False
    ) -> pl.LazyFrame:
        held = self.staged if staged else self.published
        frames = [held[i] for i in ids if i in held]
        if not frames:
            return pl.LazyFrame(schema=ROW_SCHEMAS[kind])
        return pl.concat(frames).lazy()

    def numbers(self, ids: Iterable[str]) -> pl.LazyFrame:
        frames = [
            number_index(self.rows([i])).with_columns(pl.lit(i).alias("dataset_id"))
            for i in ids
            if i in self.published
        ]
        return pl.concat(frames) if frames else pl.LazyFrame(schema=NUMBER_INDEX_SCHEMA)

    def pairs(self, ids: Iterable[str]) -> pl.LazyFrame | None:
        # As for datasets imported before pair totals were kept: analyses read the records.
        return None

    def rejections(self, dataset_id: str, offset: int, limit: int) -> list[tuple[int, str, str]]:
        return self.rejected.get(dataset_id, [])[offset : offset + limit]

    def export_file(self) -> Path:
        self.exports += 1
        return Path(f"fake-exports/{self.exports}")


class FakeExporter:
    """Records what it was asked to write; writes nothing."""

    def __init__(self) -> None:
        self.written: list[tuple[ExportFormat, Path, Any]] = []

    def network(self, net: Network, labels: dict[int, str], fmt: ExportFormat, path: Path) -> None:
        self.written.append((fmt, path, (net, labels)))

    def index(self, rows: Sequence[Sequence[Any]], fmt: ExportFormat, path: Path) -> None:
        self.written.append((fmt, path, list(rows)))
