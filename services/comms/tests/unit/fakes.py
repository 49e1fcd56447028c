"""Hand-written fakes of the comms ports: the database and the dataset store, in memory."""

from __future__ import annotations

import codecs
import copy
import dataclasses
import hashlib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl
from toex_common.events import EventEnvelope
from toex_common.testing.fakes import FakeGrants, FakeUnitOfWorkBase
from toex_comms.adapters import integration
from toex_comms.adapters.ingest import NUMBER_INDEX_SCHEMA, number_index
from toex_comms.adapters.store import ROW_SCHEMAS
from toex_comms.domain.advert_networks import AdvertNetwork
from toex_comms.domain.analysis import Network
from toex_comms.domain.commands import ExportFormat
from toex_comms.domain.identity import AttributionMove, ChangeKind, IdentityChange
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
    one_per_entity,
)
from toex_comms.domain.profiles import MappingProfile
from toex_comms.service_layer.ports import Members
from toex_kernel.grants import GrantReader, JobGrant
from toex_kernel.regions import Region


class FakeCommsRepository:
    """Stores copies; keeps the unique keys the tables keep (the same file once per region, job
    and kind; a watchlist contact once per dataset, numbers and lists). Tracks the datasets it
    stores, as the real one does, so their domain events are published at commit."""

    def __init__(
        self,
        track: Callable[[Dataset], None] = lambda _: None,
        grants: Callable[[], GrantReader] = FakeGrants,
    ) -> None:
        self._track = track
        # The unit of work's grants, as they are when asked (tests replace them).
        self._grants = grants
        self.datasets: dict[str, Dataset] = {}
        self.profiles: dict[tuple[Region, str], MappingProfile] = {}
        self.watchlists: dict[tuple[Region, str], Watchlist] = {}
        self.network_members: dict[tuple[Region, str, str], str] = {}
        self.contacts: dict[tuple[str, str, int, str, int], WatchlistContact] = {}
        self.attributed: dict[tuple[Region, str, str, str], Attribution] = {}
        self.changes: dict[tuple[Region, str], IdentityChange] = {}
        self.history: dict[tuple[Region, str, str, str, str], AttributionMove] = {}
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

    async def get_dataset_with_grant(
        self, dataset_id: str, job: str
    ) -> tuple[Dataset | None, JobGrant | None]:
        dataset = await self.get_dataset(dataset_id)
        return (dataset, await self._grants().of_job(job)) if dataset is not None else (None, None)

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

    async def list_profiles(self, region: Region, kind: DatasetKind | None = None) -> list[MappingProfile]:
        return [p for (r, _), p in sorted(self.profiles.items()) if r is region and kind in (None, p.kind)]

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

    async def lock_advert_networks(self, region: Region, job: str) -> None:
        pass

    async def advert_network_ids(
        self, region: Region, job: str | None, advert_ids: Iterable[str]
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        for (r, j, a), n in self.network_members.items():
            if r is region and (job is None or j == job) and a in set(advert_ids):
                out[a] = min(n, out.get(a, n))
        return out

    async def record_advert_networks(
        self, region: Region, job: str, members: dict[str, str], dataset: str, at: datetime
    ) -> None:
        for a, n in members.items():
            self.network_members[(region, job, a)] = n

    async def add_accounts(self, region: Region, watchlist_id: str, accounts: Iterable[str]) -> None:
        w = self.watchlists[(region, watchlist_id)]
        w.accounts = sorted(set(w.accounts) | set(accounts))

    async def account_members(
        self, region: Region, accounts: Iterable[str] | None = None
    ) -> dict[str, list[str]]:
        wanted = None if accounts is None else set(accounts)
        out: dict[str, list[str]] = {}
        for (r, wid), w in sorted(self.watchlists.items()):
            if r is region:
                for a in w.accounts:
                    if wanted is None or a in wanted:
                        out.setdefault(a, []).append(wid)
        return out

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

    # attributions, keyed as the table is: region, identifier, entity, record
    def attributions_in(self, region: Region, identifier: str = "") -> list[Attribution]:
        """What the table holds (one per record), for assertions."""
        return sorted(
            (
                a
                for (r, i, _, _), a in self.attributed.items()
                if r is region and (not identifier or i == identifier)
            ),
            key=lambda a: (a.recorded_at, a.identifier, a.entity_id, a.record),
        )

    async def attribute(self, region: Region, a: Attribution) -> None:
        self.attributed[(region, *a.key)] = a

    async def attributions(self, region: Region, identifiers: Iterable[str]) -> dict[str, list[Attribution]]:
        out: dict[str, list[Attribution]] = {}
        for identifier in set(identifiers):
            found = [
                a
                for (r, i, _, _), a in self.attributed.items()
                if i == identifier and r in (region, Region.NATIONAL)
            ]
            if found:
                out[identifier] = one_per_entity(sorted(found, key=lambda a: (a.recorded_at, a.record)))
        return out

    async def attributions_of_entities(self, region: Region, entities: Iterable[str]) -> list[Attribution]:
        wanted = set(entities)
        return [a for a in self.attributions_in(region) if a.entity_id in wanted]

    async def get_attribution(
        self, region: Region, identifier: str, entity: str, record: str
    ) -> Attribution | None:
        return self.attributed.get((region, identifier, entity, record))

    async def rekey(self, region: Region, a: Attribution, entity: str, via_change: str) -> bool:
        if entity == a.entity_id:
            return True
        del self.attributed[(region, *a.key)]
        moved = dataclasses.replace(a, entity_id=entity, via_change=via_change)
        if (region, *moved.key) in self.attributed:
            return False
        self.attributed[(region, *moved.key)] = moved
        return True

    async def remove_attribution(self, region: Region, a: Attribution) -> None:
        del self.attributed[(region, *a.key)]

    async def restore_attribution(self, region: Region, a: Attribution) -> bool:
        if (region, *a.key) in self.attributed:
            return False
        self.attributed[(region, *a.key)] = a
        return True

    async def flag_attribution(self, region: Region, a: Attribution, review: str) -> None:
        key = (region, *a.key)
        self.attributed[key] = dataclasses.replace(self.attributed[key], review=review)

    async def add_moves(self, region: Region, moves: list[AttributionMove]) -> None:
        for m in moves:
            key = (region, m.change_id, *m.before.key)
            if key in self.history:
                raise AssertionError(f"attribution_history primary key violated: {key}")
            self.history[key] = m

    async def moves_of(self, region: Region, change_id: str) -> list[AttributionMove]:
        return [m for (r, c, *_), m in self.history.items() if r is region and c == change_id]

    # identity changes applied
    async def claim_change(self, region: Region, change: IdentityChange) -> bool:
        if (region, change.change_id) in self.changes:
            return False
        self.changes[(region, change.change_id)] = copy.deepcopy(change)
        return True

    async def get_change(self, region: Region, change_id: str) -> IdentityChange | None:
        return copy.deepcopy(self.changes.get((region, change_id)))

    async def undoer_of(self, region: Region, change_id: str) -> str | None:
        found = sorted(
            (c for (r, _), c in self.changes.items() if r is region and c.undoes == change_id),
            key=lambda c: c.occurred_at,
        )
        return found[0].change_id if found else None

    async def mark_undone(self, region: Region, change_id: str, by: str) -> None:
        self.changes[(region, change_id)].undone_by = by

    async def absorbed_into(self, region: Region, entity: str) -> IdentityChange | None:
        found = [
            c
            for (r, _), c in self.changes.items()
            if r is region and c.kind is ChangeKind.MERGE and not c.undone_by and entity in c.merged
        ]
        return copy.deepcopy(max(found, key=lambda c: c.occurred_at)) if found else None

    async def last_split_of(self, region: Region, record: str, after: datetime) -> IdentityChange | None:
        found = [
            c
            for (r, _), c in self.changes.items()
            if r is region
            and c.kind is ChangeKind.SPLIT
            and record in c.moved_records
            and c.occurred_at > after
        ]
        return copy.deepcopy(max(found, key=lambda c: c.occurred_at)) if found else None

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
        self.repo = FakeCommsRepository(track=self.track, grants=lambda: self.grants)

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
        # dataset id -> the mapping profile its file was read through
        self.read_through: dict[str, MappingProfile | None] = {}

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
        self.read_through[dataset_id] = profile
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

    def advert_networks(self, networks: list[AdvertNetwork], fmt: ExportFormat, path: Path) -> None:
        self.written.append((fmt, path, list(networks)))


def advert_rows(rows: list[tuple[object, ...]]) -> pl.DataFrame:
    """Stored advert rows from (number, advert_id, site, posted, location, text, line) tuples; the
    columns kept since (seen, image hash, name, age, price) empty."""
    schema = ROW_SCHEMAS[DatasetKind.ADVERTS]
    given = ("number", "advert_id", "site", "posted", "location", "text", "line")
    frame = pl.DataFrame(rows, schema={c: schema[c] for c in given}, orient="row")
    missing = [pl.lit(None, t).alias(c) for c, t in schema.items() if c not in given]
    return frame.with_columns(missing).select(list(schema))
