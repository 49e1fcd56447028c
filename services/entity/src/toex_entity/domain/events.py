"""Domain events of entity resolution (internal: the service's one mapping, the adapters'
`integration` module, turns each into the protobuf integration events on stream ENTITY).

Resolution decides across many entities at once (a batch links records to entities it never
loads, merges them, and finds regions sharing them), so these facts are recorded on the unit
of work (`uow.record`) in the order they happen, which is the order they are published in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from toex_kernel.regions import Region

from toex_entity.domain.model import EntityChange, Move
from toex_entity.domain.mules import Cluster
from toex_entity.domain.records import RecordType, SourceRecord
from toex_entity.domain.relations import Relation


# One per record resolved, so bulk ingest builds thousands: slots, and one event (not two) for a
# record that starts an entity.
@dataclass(frozen=True, slots=True)
class RecordLinked:
    """`record` joined entity `entity_id` (the entity it joined, even if the same batch merges
    that entity into another afterwards), how (a LinkMethod: NEW when the record started the
    entity, which is then published as created too), how surely and decided by whom."""

    entity_id: str
    record: SourceRecord
    method: str
    probability: float
    decided_by: str


def _moves_of(change: EntityChange, moved: Mapping[str, SourceRecord], region: Region) -> list[Move]:
    return [m for m in change.moves if (r := moved.get(m.record_id)) is not None and r.region is region]


@dataclass(frozen=True)
class EntitiesMerged:
    """A merge: `change` moved the records `moved` (by id) into its entity, on which the
    regions `regions` now hold records."""

    change: EntityChange
    regions: frozenset[Region]
    moved: Mapping[str, SourceRecord]

    def merged_of(self, region: Region) -> tuple[str, ...]:
        """The merged entities that held records of `region`, in the change's order: ids the
        region already knows from its own records' links."""
        held = {m.from_entity for m in _moves_of(self.change, self.moved, region)}
        return tuple(e for e in self.change.others if e in held)


@dataclass(frozen=True)
class EntitySplit:
    """A split or an undone merge: `change` moved the records `moved` (by id) out of its
    entity; `regions` held records on the entity or among those moved."""

    change: EntityChange
    regions: frozenset[Region]
    moved: Mapping[str, SourceRecord]

    def moves_of(self, region: Region) -> list[Move]:
        """The moves of `region`'s records, in the change's order."""
        return _moves_of(self.change, self.moved, region)


@dataclass(frozen=True)
class DeconflictionRaised:
    """`region` (by record, job or merge `trigger`) and `other` both hold records on one
    entity: each is to be told of the other, whom to contact there, and its own records only.
    Raised once per entity and pair of regions."""

    entity_id: str
    entity_type: RecordType
    region: Region
    other: Region
    trigger: str
    records: Mapping[Region, tuple[str, ...]]  # each region's own record names
    contacts: Mapping[Region, str]  # whom to contact in each region


@dataclass(frozen=True)
class IdentifiersFingerprinted:
    """`region` holds identifiers it had not published under key `key_id`: their fingerprints
    and the region's own reference to each (domain.fingerprints). Nothing else of them."""

    region: Region
    key_id: str
    fingerprints: tuple[tuple[bytes, str], ...]  # (digest, ref)


@dataclass(frozen=True)
class DeconflictionMatched:
    """At the hub: `to`'s fingerprint `ref` is held by region `other` too, whom to contact there
    being `contact_role`. Addressed to `to` alone."""

    to: Region
    ref: str
    other: Region
    contact_role: str


@dataclass(frozen=True)
class RemoteDeconflictionRaised:
    """In a region installation: another region (`other`, known to the hub only by a matching
    fingerprint) holds an identifier of `region`'s entity `entity_id`; `region` is told, with its
    own records only. Raised once per entity and other region."""

    entity_id: str
    entity_type: RecordType
    region: Region
    other: Region
    records: tuple[str, ...]  # the region's own record names
    contact_role: str


@dataclass(frozen=True)
class RelationRecorded:
    """A relation stored for the first time from its source record."""

    relation: Relation


@dataclass(frozen=True)
class MuleClusterDetected:
    """The mule analysis of `region` found `cluster` at or over the alert threshold for the
    first time (`cluster_id` from its sorted members)."""

    region: Region
    cluster_id: str
    cluster: Cluster


DomainEvent = (
    RecordLinked
    | EntitiesMerged
    | EntitySplit
    | DeconflictionRaised
    | IdentifiersFingerprinted
    | DeconflictionMatched
    | RemoteDeconflictionRaised
    | RelationRecorded
    | MuleClusterDetected
)
