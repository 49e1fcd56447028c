"""What the comms service stores about datasets, watchlists and attributions."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import TYPE_CHECKING

from toex_kernel.regions import Region

from toex_comms.domain import events

if TYPE_CHECKING:
    from toex_comms.domain.analysis import Convoy


class DatasetKind(enum.StrEnum):
    CDR = "cdr"
    ANPR = "anpr"
    ADVERTS = "adverts"


class WatchlistKind(enum.StrEnum):
    REGISTERED_SEX_OFFENDER = "registered_sex_offender"
    VICTIM = "victim"
    POTENTIAL_VICTIM = "potential_victim"
    SUSPECT = "suspect"
    OTHER = "other"


class Handling(enum.StrEnum):
    P = "P"
    C = "C"


def new_id() -> str:
    return uuid.uuid4().hex


@dataclass
class Dataset:
    id: str
    region: Region
    kind: DatasetKind
    job: str
    display_name: str
    source_filename: str
    content_sha256: str
    profile: str
    handling: Handling
    created_by: str
    created_at: datetime
    size_bytes: int = 0
    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    distinct_identifiers: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    # What happened to the dataset since it was loaded: published when it is stored, not stored.
    events: list[events.DomainEvent] = field(default_factory=list, repr=False, compare=False)

    @property
    def name(self) -> str:
        return f"regions/{self.region.value}/datasets/{self.id}"

    def imported(self, result: IngestResult) -> None:
        """Take in what reading its file found: the dataset is imported."""
        self.rows_read = result.rows_read
        self.rows_accepted = result.rows_accepted
        self.rows_rejected = result.rows_rejected
        self.distinct_identifiers = result.distinct_identifiers
        self.first_time, self.last_time = result.first_time, result.last_time
        self.events.append(events.DatasetImported(self.name))

    def convoys_found(self, convoys: Iterable[Convoy], window_seconds: int) -> None:
        """Convoys among the dataset's ANPR reads (vehicles read together within `window_seconds`)."""
        name = self.name
        self.events.extend(events.ConvoyDetected(name, c, window_seconds) for c in convoys)

    def identifiers_found(self, found: DatasetIdentifiers) -> None:
        """The distinct identifiers the dataset holds: published so that entity resolution keeps
        each as a source record (nothing when it holds none)."""
        if found.count:
            self.events.append(events.DatasetIdentifiersObserved(self.name, found))


@dataclass(frozen=True)
class DatasetIdentifiers:
    """The distinct identifiers of one dataset, each kind sorted: phone numbers (E.164), vehicle
    registration marks (normalised) and handset IMEIs (digits)."""

    numbers: tuple[str, ...] = ()
    vrms: tuple[str, ...] = ()
    imeis: tuple[str, ...] = ()

    @property
    def count(self) -> int:
        return len(self.numbers) + len(self.vrms) + len(self.imeis)


@dataclass
class Watchlist:
    region: Region
    id: str
    display_name: str
    kind: WatchlistKind
    created_by: str
    created_at: datetime
    numbers: list[int] = field(default_factory=list)
    # Online accounts, `platform:handle` in normal form (toex_kernel.accounts).
    accounts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"regions/{self.region.value}/watchlists/{self.id}"


@dataclass(frozen=True)
class WatchlistContact:
    id: str
    region: Region
    dataset_id: str
    list_a: str
    kind_a: WatchlistKind
    number_a: int
    list_b: str
    kind_b: WatchlistKind
    number_b: int
    first: datetime
    last: datetime
    contacts: int
    calls: int
    sms: int
    duration: int
    detected_at: datetime

    @property
    def name(self) -> str:
        return f"regions/{self.region.value}/watchlistContacts/{self.id}"


@dataclass(frozen=True)
class Attribution:
    """A number or VRM attributed to an entity. One per identifier, entity and source record:
    an identifier two records hold is attributed once for each, so that each can follow its
    record when the entity is split (reads show it once per entity)."""

    identifier: str
    entity_id: str
    label: str
    source: str
    # Who decided (a user, or entity resolution's decider) and when: kept as the attribution
    # follows identity changes.
    recorded_by: str
    recorded_at: datetime
    # The entity record it came from (`regions/R/records/ID`); "" when given by hand or
    # recorded before records were kept (migration 0003).
    record: str = ""
    # The identity change (merge or split) that last moved it to this entity ("": none).
    via_change: str = ""
    # Why a person should check it ("": nothing to check), e.g. its entity was split and
    # whether it went with the records that moved cannot be told.
    review: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.identifier, self.entity_id, self.record)


def one_per_entity(found: Iterable[Attribution]) -> list[Attribution]:
    """Attributions as shown: one per identifier and entity however many records hold the
    identifier, the oldest (who decided first, and when), with the first label given and the
    first review asked for; in the order given (oldest first)."""
    shown: dict[tuple[str, str], Attribution] = {}
    for a in found:
        key = (a.identifier, a.entity_id)
        held = shown.get(key)
        if held is None:
            shown[key] = a
        elif (not held.label and a.label) or (not held.review and a.review):
            shown[key] = replace(held, label=held.label or a.label, review=held.review or a.review)
    return list(shown.values())


@dataclass(frozen=True)
class Labels:
    """What a region knows of the identifiers in an answer: whom they are attributed to (by
    identifier: "+447700900001" or a VRM) and the watchlists holding them (by number key)."""

    region: Region
    attributions: dict[str, list[Attribution]] = field(default_factory=dict)
    watchlists: dict[int, list[tuple[str, WatchlistKind]]] = field(default_factory=dict)

    def of(self, identifier: str) -> list[Attribution]:
        return self.attributions.get(identifier, [])

    def lists(self, number: int) -> list[tuple[str, WatchlistKind]]:
        return self.watchlists.get(number, [])


@dataclass(frozen=True)
class KnownJob:
    name: str
    region: Region
    job_type: str
    handling: Handling
    operation_name: str


# The reasons for an advert flag that come from the region's call data, not the adverts.
IN_PHONE_INDEX = "in_phone_index"
IN_CONTACT_NETWORK = "in_contact_network"


@dataclass(frozen=True)
class AdvertFlag:
    dataset_id: str
    region: Region
    number: int
    reasons: list[str]
    adverts: int
    locations: list[str]
    sites: list[str]
    cdr_datasets: list[str]
    first: datetime | None
    last: datetime | None
    # The call datasets in which the number was in contact with a watchlist number (the
    # evidence of IN_CONTACT_NETWORK, kept so that a job's view shows only the job's evidence).
    contact_datasets: list[str] = field(default_factory=list)

    def within(self, datasets: Iterable[str]) -> AdvertFlag | None:
        """The flag as far as the call datasets named in `datasets` support it (a job's view of
        a flag found against the whole region's call data), or None when nothing is left."""
        allowed = set(datasets)
        cdr = [d for d in self.cdr_datasets if d in allowed]
        contacts = [d for d in self.contact_datasets if d in allowed]
        evidence = {IN_PHONE_INDEX: bool(cdr), IN_CONTACT_NETWORK: bool(contacts)}
        reasons = [r for r in self.reasons if evidence.get(r, True)]
        if not reasons:
            return None
        return replace(self, reasons=reasons, cdr_datasets=cdr, contact_datasets=contacts)


class FileProblem(ValueError):
    """The file as a whole cannot be imported (no header, missing columns, not CSV, too large)."""


@dataclass
class IngestResult:
    """What reading an imported file found."""

    rows_read: int = 0
    rows_accepted: int = 0
    rows_rejected: int = 0
    distinct_identifiers: int = 0
    first_time: datetime | None = None
    last_time: datetime | None = None
    # The first rejections: (line, reason, the row as read).
    sample_rejections: list[tuple[int, str, str]] = field(default_factory=list)
