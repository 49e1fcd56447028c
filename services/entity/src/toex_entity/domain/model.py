"""Entities, their history, review tasks and reviewer decisions."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from toex_kernel.ids import new_id as new_id  # time-ordered (UUIDv7): indexes grow at one edge
from toex_kernel.regions import Region

from toex_entity.domain.records import RecordType

SYSTEM_DETERMINISTIC = "system:deterministic"
SYSTEM_PROBABILISTIC = "system:probabilistic"


def entity_name(entity_id: str) -> str:
    return f"entities/{entity_id}"


def review_name(region: Region, task_id: str) -> str:
    return f"regions/{region.value}/reviewTasks/{task_id}"


class EntityState(enum.StrEnum):
    ACTIVE = "ACTIVE"
    # Merged into another entity; its id redirects there.
    MERGED = "MERGED"


class LinkMethod(enum.StrEnum):
    """How a record came to be in its entity (also the MatchDecision of the link)."""

    NEW = "NEW"
    DETERMINISTIC = "DETERMINISTIC"
    AUTO_LINK = "AUTO_LINK"
    REVIEWER_CONFIRMED = "REVIEWER_CONFIRMED"
    MANUAL = "MANUAL"  # moved by a merge or split


class Outcome(enum.StrEnum):
    NEW_ENTITY = "NEW_ENTITY"
    LINKED_DETERMINISTIC = "LINKED_DETERMINISTIC"
    LINKED_PROBABILISTIC = "LINKED_PROBABILISTIC"
    QUEUED_FOR_REVIEW = "QUEUED_FOR_REVIEW"
    UNCHANGED = "UNCHANGED"


class ChangeKind(enum.StrEnum):
    CREATED = "CREATED"
    RECORD_LINKED = "RECORD_LINKED"
    MERGED = "MERGED"
    SPLIT = "SPLIT"
    MERGE_UNDONE = "MERGE_UNDONE"
    SPLIT_UNDONE = "SPLIT_UNDONE"


class ReviewState(enum.StrEnum):
    OPEN = "OPEN"
    CONFIRMED = "CONFIRMED"
    REJECTED = "REJECTED"
    SUPERSEDED = "SUPERSEDED"


class PairVerdict(enum.StrEnum):
    SAME = "SAME"
    DIFFERENT = "DIFFERENT"


@dataclass
class Entity:
    id: str
    entity_type: RecordType
    created_at: datetime
    updated_at: datetime
    state: EntityState = EntityState.ACTIVE
    merged_into: str | None = None

    @property
    def name(self) -> str:
        return entity_name(self.id)


@dataclass(frozen=True)
class Move:
    """One record moved by a merge or split: from which entity to which."""

    record_id: str
    from_entity: str
    to_entity: str


@dataclass
class EntityChange:
    id: str
    entity_id: str
    kind: ChangeKind
    others: tuple[str, ...]
    moves: tuple[Move, ...]
    decided_by: str
    reason: str
    at: datetime
    undone_by: str | None = None
    # For a MERGE_UNDONE: the merge it undid; for a SPLIT_UNDONE: the split.
    undoes: str | None = None


@dataclass
class Explanation:
    """A comparison between two records as stored and returned (see matching.Score)."""

    record_a: str
    record_b: str
    prior_weight: float
    contributions: list[dict[str, Any]]
    weight: float
    probability: float
    decision: str  # a MatchDecision name without prefix, e.g. "AUTO_LINK"
    shared_identifiers: list[str]
    text: str
    model_version: str

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def value_free_text(self) -> str:
        """The account of the comparison without either record's values: how each field
        compared and what it weighed, which is all a caller who may not see both records gets."""
        parts = [f"{c['comparison']}: {c['level']}, {c['weight']:+.2f}" for c in self.contributions]
        return (
            f"Match weight {self.weight:.2f} (probability {self.probability:.4f}): "
            f"{self.decision.lower().replace('_', ' ')}. " + "; ".join(parts)
        )

    def without_values(self) -> Explanation:
        """What is stored with a link: the other record may be another region's, so its values
        (and the new record's, which would show what was compared) are never kept; ExplainMatch
        recomputes them for a caller who may see both records."""
        return replace(
            self,
            contributions=[{**c, "value_a": "", "value_b": ""} for c in self.contributions],
            text=self.value_free_text(),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Explanation:
        return cls(**data)


@dataclass
class ReviewTask:
    id: str
    region: Region
    record_id: str
    candidate_record_id: str
    explanation: Explanation
    created_at: datetime
    state: ReviewState = ReviewState.OPEN
    decided_by: str = ""
    reason: str = ""
    decided_at: datetime | None = None

    @property
    def name(self) -> str:
        return review_name(self.region, self.id)


@dataclass(frozen=True)
class PairDecision:
    record_a: str
    record_b: str
    verdict: PairVerdict
    decided_by: str
    reason: str
    at: datetime


def pair_key(a: str, b: str) -> tuple[str, str]:
    return (a, b) if a <= b else (b, a)


@dataclass
class ResolveResult:
    record_id: str
    entity_id: str
    outcome: Outcome
    explanation: Explanation | None = None
    review_tasks: list[str] = field(default_factory=list)
    deconflictions: list[Region] = field(default_factory=list)
    error: str = ""
    region: str = ""  # the record's region code
    # Records the explanation compares that the caller may not see: their names and values are
    # left out of what the caller is told.
    hidden: tuple[str, ...] = ()
