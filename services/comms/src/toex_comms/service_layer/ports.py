"""The ports the handlers depend on. Adapters implement them; unit tests fake them.

Two stores: the database (datasets' metadata, profiles, watchlists, detections, attributions,
through a unit of work) and the dataset store (each dataset's rows as files)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from toex_common.uow import UnitOfWork
from toex_kernel.grants import GrantReader, JobGrant
from toex_kernel.regions import Region

from toex_comms.domain import events
from toex_comms.domain.advert_networks import AdvertNetwork
from toex_comms.domain.analysis import Network
from toex_comms.domain.commands import ExportFormat
from toex_comms.domain.identity import AttributionMove, IdentityChange
from toex_comms.domain.model import (
    AdvertFlag,
    Attribution,
    Dataset,
    DatasetKind,
    IngestResult,
    KnownJob,
    Watchlist,
    WatchlistContact,
    WatchlistKind,
)
from toex_comms.domain.profiles import MappingProfile

# number -> the watchlists (id, kind) holding it
Members = dict[int, list[tuple[str, WatchlistKind]]]


class CommsRepository(Protocol):
    async def add_dataset(self, d: Dataset) -> None: ...
    async def get_dataset(self, dataset_id: str) -> Dataset | None: ...
    async def get_dataset_with_grant(
        self, dataset_id: str, job: str
    ) -> tuple[Dataset | None, JobGrant | None]:
        """The dataset and the grant of `job` (as `uow.grants.of_job` answers), read together in
        the unit's transaction; (None, None) when there is no such dataset."""
        ...

    async def find_same_file(self, region: Region, job: str, kind: DatasetKind, sha: str) -> Dataset | None:
        """The dataset already imported from the same bytes into the same region and job."""
        ...

    async def list_datasets(
        self,
        regions: list[Region] | None,
        job: str,
        kind: DatasetKind | None,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[Dataset]:
        """Newest first; `regions` None: every region."""
        ...

    async def add_profile(self, region: Region, profile: MappingProfile, by: str, at: datetime) -> bool:
        """False when the region has a profile of that id already."""
        ...

    async def list_profiles(self, region: Region, kind: DatasetKind | None = None) -> list[MappingProfile]:
        """The region's stored profiles (of `kind` only, when given), by id."""
        ...

    async def add_watchlist(self, w: Watchlist) -> bool:
        """False when the region has a watchlist of that id already."""
        ...

    async def list_watchlists(self, region: Region, watchlist_id: str = "") -> list[Watchlist]: ...
    async def add_numbers(self, region: Region, watchlist_id: str, numbers: Iterable[int]) -> None: ...
    async def members(self, region: Region) -> Members: ...
    async def add_accounts(self, region: Region, watchlist_id: str, accounts: Iterable[str]) -> None: ...
    async def lock_advert_networks(self, region: Region, job: str) -> None: ...
    async def advert_network_ids(
        self, region: Region, job: str | None, advert_ids: Iterable[str]
    ) -> dict[str, str]: ...
    async def record_advert_networks(
        self, region: Region, job: str, members: dict[str, str], dataset: str, at: datetime
    ) -> None: ...
    async def account_members(
        self, region: Region, accounts: Iterable[str] | None = None
    ) -> dict[str, list[str]]: ...
    async def add_contacts(self, contacts: list[WatchlistContact]) -> list[str]:
        """Store the contacts not stored before; the ids of those stored now."""
        ...

    async def list_contacts(self, region: Region, limit: int, job: str = "") -> list[WatchlistContact]:
        """Newest first; only those found in datasets attached to `job`, when given."""
        ...

    async def attribute(self, region: Region, a: Attribution) -> None:
        """Store `a`, or replace what its key (identifier, entity, record) holds: a fresh
        decision, so nothing of a change that moved it here or a review is left on it."""
        ...

    async def attributions(self, region: Region, identifiers: Iterable[str]) -> dict[str, list[Attribution]]:
        """The region's (and the national team's) attributions of the identifiers, oldest
        first, one per identifier and entity (model.one_per_entity)."""
        ...

    # attributions as identity changes move them (service_layer/identity.py)
    async def attributions_of_entities(self, region: Region, entities: Iterable[str]) -> list[Attribution]:
        """The region's attributions to any of `entities` (as spelt), one per record."""
        ...

    async def get_attribution(
        self, region: Region, identifier: str, entity: str, record: str
    ) -> Attribution | None: ...
    async def rekey(self, region: Region, a: Attribution, entity: str, via_change: str) -> bool:
        """Move `a` (by its key) to `entity`, noting the change that moved it. False when
        `entity` holds the identifier from the same record already: that one is kept and `a`
        is removed (the change's history keeps it)."""
        ...

    async def remove_attribution(self, region: Region, a: Attribution) -> None: ...
    async def restore_attribution(self, region: Region, a: Attribution) -> bool:
        """Store `a` exactly as it is, unless its key is held: then False, and nothing changes."""
        ...

    async def flag_attribution(self, region: Region, a: Attribution, review: str) -> None: ...
    async def add_moves(self, region: Region, moves: list[AttributionMove]) -> None:
        """Keep what a change did to each attribution (their history, never rewritten)."""
        ...

    async def moves_of(self, region: Region, change_id: str) -> list[AttributionMove]: ...

    # identity changes applied, per region
    async def claim_change(self, region: Region, change: IdentityChange) -> bool:
        """Record `change` as applied in `region`; False when it was (by its change id)."""
        ...

    async def get_change(self, region: Region, change_id: str) -> IdentityChange | None: ...
    async def undoer_of(self, region: Region, change_id: str) -> str | None:
        """The split applied in `region` that undid merge `change_id`, if one was."""
        ...

    async def mark_undone(self, region: Region, change_id: str, by: str) -> None: ...
    async def absorbed_into(self, region: Region, entity: str) -> IdentityChange | None:
        """The merge applied in `region`, and not undone, that took `entity` in."""
        ...

    async def last_split_of(self, region: Region, record: str, after: datetime) -> IdentityChange | None:
        """The latest split applied in `region` that moved `record` and happened after `after`."""
        ...

    async def add_flags(self, flags: list[AdvertFlag]) -> None: ...
    async def list_flags(self, region: Region, dataset_id: str = "", job: str = "") -> list[AdvertFlag]:
        """The flags of one dataset, or of every dataset (attached to `job`, when given)."""
        ...

    async def upsert_job(self, job: KnownJob) -> None: ...
    async def get_job(self, name: str) -> KnownJob | None: ...


class CommsUnitOfWork(UnitOfWork, Protocol):
    """Domain events are published at commit, aggregate by aggregate in the order tracked (the
    repository tracks the datasets it stores); the events `record`ed on the unit of work count
    as one more aggregate, tracked at the first `record`."""

    repo: CommsRepository

    @property
    def grants(self) -> GrantReader: ...

    def track(self, aggregate: Dataset) -> None:
        """Publish `aggregate.events` at commit."""
        ...

    def record(self, event: events.DomainEvent) -> None:
        """A domain event of no one aggregate (a finding across datasets), published at commit."""
        ...

    async def __aenter__(self) -> CommsUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...


class Upload(Protocol):
    """A file being received: kept as UTF-8 whatever its encoding, hashed as it arrives."""

    def write(self, chunk: bytes) -> None:
        """Raises FileProblem once the file grows past the store's limit."""
        ...

    def close(self) -> str:
        """Finish the file; the SHA-256 of the bytes received, in hex."""
        ...

    @property
    def size_bytes(self) -> int:
        """The size of the file kept (after transcoding), once closed."""
        ...

    def discard(self) -> None:
        """Close and delete the file: nothing of the upload is kept."""
        ...


class DatasetStore(Protocol):
    """Datasets' rows, rejections, phone index and pair totals. An import is written to a
    staging area first and published (or discarded) as a whole."""

    def receive(self, encoding: str, max_bytes: int) -> Upload:
        """A new upload; raises FileProblem for an unknown encoding."""
        ...

    def ingest(
        self, kind: DatasetKind, upload: Upload, dataset_id: str, profile: MappingProfile | None
    ) -> IngestResult:
        """Read the upload (received by this store) into the staging area of `dataset_id`; raises
        FileProblem when the file as a whole cannot be read. Slow: call it off the event loop."""
        ...

    def publish(self, dataset_id: str) -> None: ...
    def discard(self, dataset_id: str) -> None:
        """Forget a staged or published dataset."""
        ...

    def rows(
        self, ids: Iterable[str], kind: DatasetKind = DatasetKind.CDR, staged: bool = False
    ) -> pl.LazyFrame:
        """The rows of the datasets (of `kind`), or of the staged import when `staged`."""
        ...

    def numbers(self, ids: Iterable[str]) -> pl.LazyFrame:
        """The phone index of the datasets, with a dataset_id column."""
        ...

    def pairs(self, ids: Iterable[str]) -> pl.LazyFrame | None:
        """Contact totals per pair of numbers; None when a dataset has none."""
        ...

    def rejections(self, dataset_id: str, offset: int, limit: int) -> list[tuple[int, str, str]]: ...
    def export_file(self) -> Path:
        """A new empty file for an export; whoever sends it deletes it."""
        ...


class Exporter(Protocol):
    """Files a briefing needs. Slow: call them off the event loop."""

    def network(self, net: Network, labels: dict[int, str], fmt: ExportFormat, path: Path) -> None: ...
    def index(self, rows: Sequence[Sequence[Any]], fmt: ExportFormat, path: Path) -> None: ...
    def advert_networks(self, networks: list[AdvertNetwork], fmt: ExportFormat, path: Path) -> None: ...
