"""What callers ask the comms service to do (commands) or tell them (queries).

`purpose` is the call's stated purpose (x-toex-purpose). It decides nothing for a caller who
sees the region; for anyone else it must name the job whose grant the call works under
(domain/policy.py)."""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime

from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_comms.domain.model import DatasetKind, Handling, WatchlistKind
from toex_comms.domain.profiles import MappingProfile


@dataclass(frozen=True)
class ImportFile:
    actor: Principal
    kind: DatasetKind
    region: Region
    job: str
    display_name: str
    filename: str
    profile: str
    handling: Handling | None
    # As the client declared them in the upload's header.
    encoding: str
    declared_size: int
    # The file's bytes as they arrive.
    chunks: AsyncIterator[bytes]
    purpose: str = ""


@dataclass(frozen=True)
class Scope:
    """Which datasets an analysis reads, and the time window."""

    actor: Principal
    region: Region
    dataset_ids: tuple[str, ...]
    job: str
    start: datetime | None = None
    end: datetime | None = None
    purpose: str = ""


# ---------------------------------------------------------------- datasets and profiles


@dataclass(frozen=True)
class GetDataset:
    actor: Principal
    region: Region
    dataset_id: str
    purpose: str = ""


@dataclass(frozen=True)
class ListDatasets:
    actor: Principal
    region: Region | None  # None: every region the actor sees
    job: str
    kind: DatasetKind | None
    page_size: int
    after: tuple[datetime, str] | None
    purpose: str = ""


@dataclass(frozen=True)
class ListRejections:
    actor: Principal
    region: Region
    dataset_id: str
    offset: int
    page_size: int
    purpose: str = ""


@dataclass(frozen=True)
class CreateMappingProfile:
    actor: Principal
    region: Region
    profile: MappingProfile


@dataclass(frozen=True)
class ListMappingProfiles:
    actor: Principal
    region: Region
    purpose: str = ""
    kind: DatasetKind | None = None  # None: every kind


# ---------------------------------------------------------------- phone index and attribution


@dataclass(frozen=True)
class SearchPhoneIndex:
    actor: Principal
    region: Region | None  # None: every region the actor sees
    number: str
    purpose: str = ""


@dataclass(frozen=True)
class ListPhoneIndex:
    scope: Scope
    after: int  # the last number of the previous page
    page_size: int


@dataclass(frozen=True)
class AttributeIdentifier:
    actor: Principal
    region: Region
    identifier: str
    vehicle: bool
    entity_id: str
    label: str


# ---------------------------------------------------------------- analyses of call data


@dataclass(frozen=True)
class GetContactNetwork:
    scope: Scope
    targets: list[int]
    min_contacts: int
    max_edges: int


@dataclass(frozen=True)
class FindCommonContacts:
    scope: Scope
    targets: list[int]
    min_targets: int
    include_targets: bool
    limit: int


@dataclass(frozen=True)
class RankSuspects:
    scope: Scope
    targets: list[int]
    limit: int
    max_degree: int


@dataclass(frozen=True)
class GetTargetProfile:
    scope: Scope
    target: int
    top: int


@dataclass(frozen=True)
class FindColocations:
    scope: Scope
    targets: list[int]
    window_seconds: int
    limit: int


# ---------------------------------------------------------------- watchlists and adverts


@dataclass(frozen=True)
class CreateWatchlist:
    actor: Principal
    region: Region
    watchlist_id: str
    display_name: str
    kind: WatchlistKind


@dataclass(frozen=True)
class AddWatchlistNumbers:
    actor: Principal
    region: Region
    watchlist_id: str
    numbers: list[str]
    # Online accounts as written (a profile URL or platform:handle).
    accounts: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ListWatchlists:
    actor: Principal
    region: Region


@dataclass(frozen=True)
class ListWatchlistContacts:
    actor: Principal
    region: Region
    limit: int
    purpose: str = ""


@dataclass(frozen=True)
class ListAdvertFlags:
    actor: Principal
    region: Region
    dataset_id: str  # empty: every dataset of the region
    purpose: str = ""


@dataclass(frozen=True)
class FindAdvertNetworks:
    """Advert networks over the scope's advert datasets (none named: every one of the region or
    the job), with `call_dataset_ids` (none: every one of the same reach) as the call data that
    controllers and watchlist contacts are found in. The scope's window is on the posted time."""

    scope: Scope
    call_dataset_ids: tuple[str, ...] = ()
    min_adverts: int = 2
    min_numbers: int = 2
    limit: int = 100


# ---------------------------------------------------------------- ANPR


@dataclass(frozen=True)
class FindConvoys:
    scope: Scope
    window_seconds: int
    min_occasions: int
    vrms: list[str]  # empty: every vehicle
    limit: int


@dataclass(frozen=True)
class GetTravelPattern:
    scope: Scope
    vrm: str
    max_hop_seconds: int


# ---------------------------------------------------------------- exports


class ExportFormat(enum.Enum):
    GRAPHML = "graphml"
    I2_LINK_CSV = "i2_link_csv"
    SVG = "svg"
    PNG = "png"
    INDEX_CSV = "index_csv"
    INDEX_XLSX = "index_xlsx"
    ADVERT_NETWORKS_GRAPHML = "advert_networks_graphml"
    ADVERT_NETWORKS_I2_LINK_CSV = "advert_networks_i2_link_csv"
    ADVERT_NETWORKS_CSV = "advert_networks_csv"

    @property
    def is_advert_networks(self) -> bool:
        return self.value.startswith("advert_networks")

    @property
    def is_network(self) -> bool:
        """A contact network format."""
        return self in (ExportFormat.GRAPHML, ExportFormat.I2_LINK_CSV, ExportFormat.SVG, ExportFormat.PNG)


@dataclass(frozen=True)
class Export:
    scope: Scope
    format: ExportFormat
    targets: list[int]  # network formats only
    min_contacts: int
    # Advert network formats: which networks (its scope is the one authorised and searched).
    advert_networks: FindAdvertNetworks | None = None


# ---------------------------------------------------------------- identity changes consumed


@dataclass(frozen=True)
class FollowMerge:
    """Entity resolution merged `merged` into `entity` (change `change_id`); the copy of
    `region`, whose attributions follow. `merged` is empty when the copy does not say which."""

    region: Region
    change_id: str
    entity: str
    merged: tuple[str, ...]
    decided_by: str
    occurred_at: datetime


@dataclass(frozen=True)
class FollowSplit:
    """Entity resolution moved records of `region` from `entity` (change `change_id`): `moves`
    holds (record, the entity it moved to); `undone_change` names the merge it undid, when it
    undid one."""

    region: Region
    change_id: str
    entity: str
    moves: tuple[tuple[str, str], ...]
    undone_change: str
    decided_by: str
    occurred_at: datetime
