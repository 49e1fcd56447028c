"""Domain events of the comms service: internal, plain values. The service's one mapping (the
`integration` module of its adapters) turns them into the protobuf integration events.

A dataset records what its import found in it alone (`DatasetImported`, `ConvoyDetected`,
`DatasetIdentifiersObserved`).
Findings that reach beyond one dataset (contact between numbers of two watchlists, an advert
number flagged against the region's call data) are recorded on the unit of work, so they carry
the labels of the dataset they were found in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from toex_kernel.regions import Region

    from toex_comms.domain.advert_networks import AdvertNetwork
    from toex_comms.domain.analysis import Convoy
    from toex_comms.domain.model import AdvertFlag, DatasetIdentifiers, Handling, WatchlistContact


@dataclass(frozen=True)
class DatasetImported:
    dataset: str


@dataclass(frozen=True)
class ConvoyDetected:
    dataset: str
    convoy: Convoy
    window_seconds: int


@dataclass(frozen=True)
class DatasetIdentifiersObserved:
    """Every distinct identifier of the dataset, in one event: the mapping splits it into
    messages of a bounded size."""

    dataset: str
    identifiers: DatasetIdentifiers


@dataclass(frozen=True)
class WatchlistContactDetected:
    """A contact not found before. `job` and `handling` are those of the dataset it is in."""

    contact: WatchlistContact
    job: str
    handling: Handling
    # The entities the two numbers are attributed to ("" when none).
    entity_a: str
    entity_b: str


@dataclass(frozen=True)
class AdvertNumberFlagged:
    """`dataset` (its name), `job` and `handling` are those of the advert dataset."""

    flag: AdvertFlag
    dataset: str
    job: str
    handling: Handling
    # The entity the number is attributed to ("" when none).
    entity_id: str


@dataclass(frozen=True)
class AdvertNetworkDetected:
    """A network of the adverts of one new dataset; `dataset` (its name), `job` and `handling`
    are the dataset's."""

    network: AdvertNetwork
    region: Region
    dataset: str
    job: str
    handling: Handling


DomainEvent = (
    DatasetImported
    | ConvoyDetected
    | DatasetIdentifiersObserved
    | WatchlistContactDetected
    | AdvertNumberFlagged
    | AdvertNetworkDetected
)
