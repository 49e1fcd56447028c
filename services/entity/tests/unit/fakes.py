"""Hand-written in-memory fakes of the entity repository and unit of work."""

from __future__ import annotations

import copy
from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from toex_common.events.envelope import EventEnvelope
from toex_common.testing.fakes import FakeUnitOfWorkBase
from toex_entity.adapters import integration
from toex_entity.domain.matching import Features, MatchModel
from toex_entity.domain.model import (
    Entity,
    EntityChange,
    EntityState,
    PairDecision,
    PairVerdict,
    ReviewState,
    ReviewTask,
)
from toex_entity.domain.records import SourceRecord
from toex_entity.domain.relations import StoredRelation
from toex_entity.domain.sample import BottomK
from toex_entity.service_layer.ports import Candidate, EntityLink, KeyHit, SourceKey
from toex_kernel.regions import Region


class FakeRepository:
    def __init__(self) -> None:
        self.records: dict[str, SourceRecord] = {}
        self.links: dict[str, EntityLink] = {}
        self.keys: dict[str, set[str]] = defaultdict(set)
        self.entities: dict[str, Entity] = {}
        self.changes: dict[str, EntityChange] = {}
        self.reviews: dict[str, ReviewTask] = {}
        self.decisions: dict[tuple[str, str], PairDecision] = {}
        self.deconflicted: set[tuple[str, Region, Region]] = set()
        self.model: MatchModel | None = None
        self.job_subjects: dict[tuple[str, str], Region] = {}
        # The person sample, kept as the SQL repository keeps it (domain/sample.py).
        self.sample = BottomK()

    async def find_existing(self, keys: Sequence[SourceKey]) -> dict[SourceKey, SourceRecord]:
        wanted = set(keys)
        return {
            (r.region, r.source_system, r.source_record_id): r
            for r in self.records.values()
            if (r.region, r.source_system, r.source_record_id) in wanted
        }

    async def add_records(self, records: Sequence[SourceRecord], links: Sequence[EntityLink]) -> None:
        for record, link in zip(records, links, strict=True):
            self.records[record.id] = copy.copy(record)
            self.links[record.id] = link
        self.sample.offer_all(r.id for r in records if r.features is not None)

    async def update_record(self, record: SourceRecord) -> None:
        self.records[record.id] = copy.copy(record)
        if record.features is None:
            self.sample.remove(record.id)

    async def get_records(self, ids: Iterable[str]) -> dict[str, SourceRecord]:
        return {i: self.records[i] for i in ids if i in self.records}

    async def records_of(self, entity_ids: Iterable[str]) -> list[SourceRecord]:
        wanted = set(entity_ids)
        return [r for r in self.records.values() if r.entity_id in wanted]

    async def links_of(self, record_ids: Iterable[str]) -> dict[str, EntityLink]:
        return {i: self.links[i] for i in record_ids if i in self.links}

    async def records_for_view(
        self, entity_ids: Iterable[str]
    ) -> tuple[list[SourceRecord], dict[str, EntityLink]]:
        records = await self.records_of(entity_ids)
        return records, await self.links_of(r.id for r in records)

    async def regions_of(self, entity_ids: Iterable[str]) -> dict[str, set[Region]]:
        found: dict[str, set[Region]] = defaultdict(set)
        wanted = set(entity_ids)
        for r in self.records.values():
            if r.entity_id in wanted:
                found[r.entity_id].add(r.region)
        return found

    async def features_of(self, record_ids: Iterable[str]) -> dict[str, Features]:
        return {i: self.records[i].features for i in record_ids if self.records[i].features}  # type: ignore[misc]

    async def add_keys(self, rows: Sequence[tuple[str, str]], *, fresh: bool = False) -> None:
        for key, record in rows:
            self.keys[key].add(record)

    async def replace_keys(self, record_id: str, old: Sequence[str], new: Sequence[str]) -> None:
        for key in old:
            self.keys[key].discard(record_id)
        await self.add_keys([(k, record_id) for k in new])

    async def hits(self, keys: Sequence[str]) -> list[KeyHit]:
        return [
            KeyHit(k, r, self.records[r].entity_id, self.records[r].record_type, self.records[r].region)
            for k in keys
            for r in sorted(self.keys.get(k, ()))
        ]

    async def candidates(self, keys: Sequence[str], per_key: int) -> list[tuple[str, Candidate]]:
        out = []
        for k in keys:
            for r in sorted(self.keys.get(k, ()))[:per_key]:
                record = self.records[r]
                if record.features is not None:
                    out.append((k, Candidate(r, record.entity_id, record.region, record.features)))
        return out

    async def add_entities(self, entities: Sequence[Entity]) -> None:
        for e in entities:
            self.entities[e.id] = copy.copy(e)

    async def get_entity(self, entity_id: str) -> Entity | None:
        return self.entities.get(entity_id)

    async def touch_entities(self, ids: Iterable[str], at: datetime) -> None:
        for i in ids:
            self.entities[i].updated_at = at

    async def move_records(
        self, from_entity: str, to_entity: str, record_ids: Sequence[str] | None
    ) -> list[str]:
        moved = []
        for r in self.records.values():
            if r.entity_id == from_entity and (record_ids is None or r.id in record_ids):
                r.entity_id = to_entity
                moved.append(r.id)
        return sorted(moved)

    async def set_merged(self, entity_id: str, into: str | None, at: datetime) -> None:
        entity = self.entities[entity_id]
        entity.state = EntityState.MERGED if into else EntityState.ACTIVE
        entity.merged_into = into

    async def merged_ids(self, entity_id: str) -> list[str]:
        found: list[str] = []
        frontier = [entity_id]
        while frontier:
            current = frontier.pop()
            for e in self.entities.values():
                if e.merged_into == current and e.id not in found:
                    found.append(e.id)
                    frontier.append(e.id)
        return sorted(found)

    async def add_change(self, change: EntityChange) -> None:
        self.changes[change.id] = change

    async def get_change(self, change_id: str) -> EntityChange | None:
        return self.changes.get(change_id)

    async def changes_of(self, entity_ids: Iterable[str]) -> list[EntityChange]:
        wanted = set(entity_ids)
        return [c for c in self.changes.values() if c.entity_id in wanted or wanted & set(c.others)]

    async def mark_undone(self, change_id: str, by_change: str) -> None:
        self.changes[change_id].undone_by = by_change

    async def add_review_tasks(self, tasks: Sequence[ReviewTask]) -> None:
        for t in tasks:
            self.reviews[t.id] = t

    async def get_review_task(self, task_id: str, *, for_update: bool = False) -> ReviewTask | None:
        return self.reviews.get(task_id)

    async def save_review_task(self, task: ReviewTask) -> None:
        self.reviews[task.id] = task

    async def list_review_tasks(
        self,
        regions: frozenset[Region] | None,
        state: ReviewState,
        limit: int,
        after: tuple[datetime, str] | None,
        job: str = "",
    ) -> list[ReviewTask]:
        tasks = sorted(
            (
                t
                for t in self.reviews.values()
                if t.state is state
                and (regions is None or t.region in regions)
                and (
                    not job or self.records[t.record_id].job == self.records[t.candidate_record_id].job == job
                )
            ),
            key=lambda t: (t.created_at, t.id),
        )
        if after is not None:
            tasks = [t for t in tasks if (t.created_at, t.id) > after]
        return tasks[:limit]

    async def open_review_pairs(self, record_ids: Iterable[str]) -> set[tuple[str, str]]:
        wanted = set(record_ids)
        return {
            (t.record_id, t.candidate_record_id)
            for t in self.reviews.values()
            if t.state is ReviewState.OPEN and {t.record_id, t.candidate_record_id} & wanted
        }

    async def supersede_reviews(self, pairs: Iterable[tuple[str, str]], at: datetime) -> None:
        return None

    async def add_pair_decisions(self, decisions: Sequence[PairDecision]) -> None:
        for d in decisions:
            self.decisions[(d.record_a, d.record_b)] = d

    async def different_pairs(self, record_ids: Iterable[str]) -> set[tuple[str, str]]:
        wanted = set(record_ids)
        return {
            k for k, d in self.decisions.items() if d.verdict is PairVerdict.DIFFERENT and set(k) & wanted
        }

    async def different_between(
        self, entities_a: Iterable[str], entities_b: Iterable[str]
    ) -> list[tuple[str, str]]:
        a, b = set(entities_a), set(entities_b)
        out = []
        for (x, y), d in self.decisions.items():
            if d.verdict is not PairVerdict.DIFFERENT:
                continue
            ex, ey = self.records[x].entity_id, self.records[y].entity_id
            if (ex in a and ey in b) or (ex in b and ey in a):
                out.append((x, y))
        return out

    async def different_decisions(
        self, records_a: Iterable[str], records_b: Iterable[str]
    ) -> list[PairDecision]:
        a, b = set(records_a), set(records_b)
        return [
            d
            for (x, y), d in self.decisions.items()
            if d.verdict is PairVerdict.DIFFERENT and ((x in a and y in b) or (x in b and y in a))
        ]

    async def remove_pair_decisions(self, pairs: Iterable[tuple[str, str]]) -> None:
        for pair in pairs:
            self.decisions.pop(pair, None)

    async def claim_deconfliction(self, entity_id: str, region: Region, other: Region) -> bool:
        key = (entity_id, region, other)
        if key in self.deconflicted:
            return False
        self.deconflicted.add(key)
        return True

    async def active_model(self) -> MatchModel | None:
        return self.model

    async def save_model(self, model: MatchModel, at: datetime) -> None:
        self.model = model

    # The learning worker's state and models (service_layer/learning.py).
    async def count_person_records(self) -> int:
        return sum(1 for r in self.records.values() if r.features is not None)

    async def learning_state(self) -> dict[str, Any]:
        return dict(getattr(self, "_learning_state", {"records_at_estimate": 0, "estimated_at": None}))

    async def save_learning_state(self, values: dict[str, Any], at: datetime) -> None:
        self._learning_state = dict(values)

    async def reviewer_pairs(self, limit: int) -> list[tuple[str, Features, Features]]:
        return []

    async def save_model_outcome(
        self, model: MatchModel, at: datetime, *, activate: bool, checks: dict[str, Any], records_seen: int
    ) -> None:
        if activate:
            self.model = model

    async def person_features_sample(self, limit: int) -> list[tuple[str, Features]]:
        return [(i, self.records[i].features) for i in self.sample.sample(limit)]  # type: ignore[misc]

    async def add_job_subject(self, job: str, entity_id: str, region: Region, at: datetime) -> bool:
        if (job, entity_id) in self.job_subjects:
            return False
        self.job_subjects[(job, entity_id)] = region
        return True

    async def is_job_subject(self, job: str, region: Region, entity_ids: Sequence[str]) -> bool:
        return any(self.job_subjects.get((job, e)) is region for e in entity_ids)


class FakeRelations:
    """The relations port: what merges asked it to follow."""

    def __init__(self) -> None:
        self.followed: list[tuple[list[str], str]] = []
        self.undone: list[tuple[str, str]] = []
        self.split: list[tuple[str, str, list[str]]] = []
        self.stored: list[Any] = []  # StoredRelation
        self.keys: set[tuple[Any, ...]] = set()

    async def store_relations(
        self, items: Sequence[Any], recorded_by: str, at: Any, job: str = "", *, fresh: bool = False
    ) -> list[Any]:
        """Each relation once per source record (as the unique key in PostgreSQL)."""
        new = []
        for r in items:
            key = (r.region, r.kind, r.subject, r.target, r.source_system, r.source_record_id)
            if key not in self.keys:
                self.keys.add(key)
                self.stored.append(StoredRelation(r, at, recorded_by))
                new.append(r)
        return new

    async def relations_touching(self, entity_id: str) -> list[Any]:
        return [s for s in self.stored if entity_id in (s.relation.subject, s.relation.target)]

    async def follow_merge(self, merged: Sequence[str], into: str, change_id: str = "") -> None:
        self.followed.append((list(merged), into))

    async def undo_merge(self, change_id: str, survivor: str) -> None:
        self.undone.append((change_id, survivor))

    async def follow_split(self, entity: str, split_off: str, records: Sequence[str]) -> None:
        self.split.append((entity, split_off, list(records)))


class FakeUnitOfWork(FakeUnitOfWorkBase):
    """Commits copy nothing: the fake repository is the store. Domain events recorded are mapped
    by the service's own mapping at commit (`committed_events`)."""

    def __init__(self, repo: FakeRepository) -> None:
        super().__init__()
        self.repo = repo
        self.relations = FakeRelations()

    def integration_events(self, aggregate: Any, event: Any) -> Iterable[EventEnvelope]:
        return integration.integration_events(aggregate, event)

    async def lock_resolution(self) -> None:
        return None
