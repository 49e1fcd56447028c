"""The ports the handlers depend on. The PostgreSQL adapter implements them; unit tests use
the in-memory fake in tests/unit/fakes.py."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from toex_common.uow import UnitOfWork
from toex_kernel.grants import GrantReader
from toex_kernel.regions import Region

from toex_entity.domain.events import DomainEvent
from toex_entity.domain.matching import Features, MatchModel
from toex_entity.domain.model import (
    Entity,
    EntityChange,
    Move,
    PairDecision,
    ReviewState,
    ReviewTask,
)
from toex_entity.domain.mules import Grouped
from toex_entity.domain.records import RecordType, SourceRecord
from toex_entity.domain.relations import PersonAttributes, Relation, StoredRelation

SourceKey = tuple[Region, str, str]  # (region, source system, source record id)


@dataclass(frozen=True)
class KeyHit:
    """A stored record found under an index key."""

    key: str
    record_id: str
    entity_id: str
    record_type: RecordType
    region: Region


@dataclass(frozen=True)
class Candidate:
    """A stored person record found by blocking, with its comparison features."""

    record_id: str
    entity_id: str
    region: Region
    features: Features


@dataclass(frozen=True)
class EntityLink:
    """How one record joined its entity (for history and explanations)."""

    record_id: str
    method: str
    probability: float
    decided_by: str
    at: datetime
    explanation: dict[str, object] | None


class EntityRepository(Protocol):
    # records
    async def find_existing(self, keys: Sequence[SourceKey]) -> dict[SourceKey, SourceRecord]: ...
    async def add_records(self, records: Sequence[SourceRecord], links: Sequence[EntityLink]) -> None: ...
    async def update_record(self, record: SourceRecord) -> None: ...
    async def get_records(self, ids: Iterable[str]) -> dict[str, SourceRecord]: ...
    async def records_of(self, entity_ids: Iterable[str]) -> list[SourceRecord]: ...
    async def links_of(self, record_ids: Iterable[str]) -> dict[str, EntityLink]: ...
    async def records_for_view(
        self, entity_ids: Iterable[str]
    ) -> tuple[list[SourceRecord], dict[str, EntityLink]]: ...
    async def regions_of(self, entity_ids: Iterable[str]) -> dict[str, set[Region]]: ...
    async def features_of(self, record_ids: Iterable[str]) -> dict[str, Features]: ...
    # index keys
    async def add_keys(self, rows: Sequence[tuple[str, str]], *, fresh: bool = False) -> None: ...
    async def replace_keys(self, record_id: str, old: Sequence[str], new: Sequence[str]) -> None: ...
    async def hits(self, keys: Sequence[str]) -> list[KeyHit]: ...
    async def candidates(self, keys: Sequence[str], per_key: int) -> list[tuple[str, Candidate]]: ...
    # entities
    async def add_entities(self, entities: Sequence[Entity]) -> None: ...
    async def get_entity(self, entity_id: str) -> Entity | None: ...
    async def touch_entities(self, ids: Iterable[str], at: datetime) -> None: ...
    async def move_records(
        self, from_entity: str, to_entity: str, record_ids: Sequence[str] | None
    ) -> list[str]:
        """Move the given records (all when None) of `from_entity` to `to_entity`; returns the
        ids moved."""
        ...

    async def set_merged(self, entity_id: str, into: str | None, at: datetime) -> None: ...
    async def merged_ids(self, entity_id: str) -> list[str]: ...
    # history
    async def add_change(self, change: EntityChange) -> None: ...
    async def get_change(self, change_id: str) -> EntityChange | None: ...
    async def changes_of(self, entity_ids: Iterable[str]) -> list[EntityChange]: ...
    async def mark_undone(self, change_id: str, by_change: str) -> None: ...
    # reviews and decisions
    async def add_review_tasks(self, tasks: Sequence[ReviewTask]) -> None: ...
    async def get_review_task(self, task_id: str, *, for_update: bool = False) -> ReviewTask | None: ...
    async def save_review_task(self, task: ReviewTask) -> None: ...
    async def list_review_tasks(
        self,
        regions: frozenset[Region] | None,
        state: ReviewState,
        limit: int,
        after: tuple[datetime, str] | None,
        job: str = "",
    ) -> list[ReviewTask]:
        """Tasks in `state` of `regions` (None: all), in creation order after `after`; with
        `job`, only those both of whose records are attached to that job."""
        ...

    async def open_review_pairs(self, record_ids: Iterable[str]) -> set[tuple[str, str]]: ...
    async def supersede_reviews(self, pairs: Iterable[tuple[str, str]], at: datetime) -> None: ...
    async def add_pair_decisions(self, decisions: Sequence[PairDecision]) -> None: ...
    async def different_pairs(self, record_ids: Iterable[str]) -> set[tuple[str, str]]: ...
    async def different_between(
        self, entities_a: Iterable[str], entities_b: Iterable[str]
    ) -> list[tuple[str, str]]: ...
    async def different_decisions(
        self, records_a: Iterable[str], records_b: Iterable[str]
    ) -> list[PairDecision]:
        """The "kept apart" decisions on pairs of a record of `records_a` and one of `records_b`."""
        ...

    async def remove_pair_decisions(self, pairs: Iterable[tuple[str, str]]) -> None: ...
    # deconfliction
    async def claim_deconfliction(self, entity_id: str, region: Region, other: Region) -> bool: ...
    # models
    async def active_model(self) -> MatchModel | None: ...
    async def save_model(self, model: MatchModel, at: datetime) -> None: ...
    async def person_features_sample(self, limit: int) -> list[tuple[str, Features]]: ...
    async def save_model_outcome(
        self, model: MatchModel, at: datetime, *, activate: bool, checks: dict[str, Any], records_seen: int
    ) -> None: ...
    async def count_person_records(self) -> int: ...
    async def learning_state(self) -> dict[str, Any]: ...
    async def save_learning_state(self, values: dict[str, Any], at: datetime) -> None: ...
    async def persons_after(self, cursor: str, limit: int) -> list[Candidate]: ...
    async def model(self, version: str) -> MatchModel | None: ...
    async def persons_to_reresolve(
        self, cursor: str, limit: int, present: Sequence[str] | None
    ) -> list[tuple[Candidate, str]]: ...
    async def members(self, entity_ids: Iterable[str]) -> list[tuple[Candidate, str]]: ...
    async def candidates_with(
        self, keys: Sequence[str], per_key: int, present: Sequence[str]
    ) -> list[tuple[str, Candidate]]: ...
    async def confirmed_records(self, records: Sequence[tuple[str, str]]) -> set[str]: ...
    async def reviewer_pairs(self, limit: int) -> list[tuple[str, Features, Features]]: ...
    # job subjects (from tasking)
    async def add_job_subject(self, job: str, entity_id: str, region: Region, at: datetime) -> bool: ...
    async def is_job_subject(self, job: str, region: Region, entity_ids: Sequence[str]) -> bool:
        """Whether job `job` of `region` named one of `entity_ids` as a subject."""
        ...


class FederationRepository(Protocol):
    """Deconfliction across installations (domain.fingerprints): a region's fingerprinted
    identifiers and the regions known to hold them too; the hub's fingerprints of every region."""

    # a region's side
    async def claim_identifiers(
        self, key_id: str, identifiers: Sequence[str], at: datetime
    ) -> list[tuple[str, str]]:
        """Note `identifiers` as published under `key_id`, each with a new random reference;
        returns (identifier, ref) for those not noted before (the others are left as they are)."""
        ...

    async def unpublished_identifiers(self, key_id: str, limit: int) -> list[str]:
        """Strong identifiers the region's records carry that were never published under `key_id`."""
        ...

    async def identifier_of_ref(self, ref: str) -> str | None: ...
    async def add_remote_holder(
        self, identifier: str, other: Region, contact_role: str, at: datetime
    ) -> bool: ...
    async def remote_holders(self, identifiers: Sequence[str]) -> dict[str, list[tuple[Region, str]]]:
        """Other regions known to hold each identifier, with whom to contact there."""
        ...

    async def entities_with(self, identifier: str) -> list[tuple[str, RecordType]]:
        """The (active) entities holding a record that carries `identifier`, with their type."""
        ...

    # the hub's side
    async def add_sightings(
        self, region: Region, key_id: str, fingerprints: Sequence[tuple[bytes, str]], at: datetime
    ) -> list[tuple[bytes, str]]:
        """Store `region`'s fingerprints under `key_id`; returns those it had not published before."""
        ...

    async def sightings(self, key_id: str, digests: Sequence[bytes]) -> dict[bytes, list[tuple[Region, str]]]:
        """Every region holding each fingerprint under `key_id`, with its reference."""
        ...


class RelationRepository(Protocol):
    """Relations and what the mule analysis reads (adapters.relations)."""

    async def analysis_input(self, region: str) -> tuple[Grouped, dict[str, PersonAttributes]]: ...
    async def follow_merge(self, merged: Sequence[str], into: str, change_id: str = "") -> None: ...
    async def undo_merge(self, change_id: str, survivor: str) -> None: ...
    async def follow_split(self, entity: str, split_off: str, records: Sequence[str]) -> None: ...
    async def relations_touching(self, entity_id: str) -> list[StoredRelation]: ...
    async def claim_mule_alerts(
        self, region: str, clusters: Sequence[tuple[str, float]], at: datetime
    ) -> set[str]: ...
    async def add_relations(
        self, items: Sequence[Relation], recorded_by: str, at: datetime, job: str = ""
    ) -> int: ...
    async def store_relations(
        self, items: Sequence[Relation], recorded_by: str, at: datetime, job: str = "", *, fresh: bool = False
    ) -> list[Relation]: ...


class EntityUnitOfWork(UnitOfWork, Protocol):
    repo: EntityRepository
    federation: FederationRepository
    relations: RelationRepository  # service_layer.mules

    @property
    def grants(self) -> GrantReader: ...

    def record(self, event: DomainEvent) -> None:
        """A domain event, published (through the service's one mapping) at commit, in the order
        recorded."""
        ...

    def map_meanwhile(self) -> None:
        """Map the events recorded so far while the unit waits on its database (a bulk
        resolution's events are a tenth of its CPU); what commit writes is the same."""
        ...

    async def __aenter__(self) -> EntityUnitOfWork: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def lock_resolution(self) -> None:
        """Serialise resolution writes (one writer decides entity membership at a time)."""
        ...

    async def lock_matching(self) -> None:
        """At the hub: serialise fingerprint matching, so two regions' copies of one fingerprint
        arriving at once still meet."""
        ...


@dataclass(frozen=True)
class MoveSet:
    moves: tuple[Move, ...]
