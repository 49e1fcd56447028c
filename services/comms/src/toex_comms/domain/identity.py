"""Identity changes from entity resolution, as a region's comms attributions follow them.

The entity service merges entities (the merged ids redirect to the surviving one) and splits
them (records move to other entities; undoing a merge is a split that names the merge). Each
region gets its own copy of a change, about its own records. What a region applied is kept by
change id, with the attributions each change moved (their history): that is what makes a
change applied twice change nothing, lets an undone merge put back exactly what it moved, and
makes a merge arriving after the split that undid it change nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

from toex_comms.domain.model import Attribution

ENTITY_PREFIX = "entities/"
# Merges are followed at most this far (a chain of merges); a longer chain or a cycle stops.
MAX_HOPS = 16


class ChangeKind(enum.StrEnum):
    MERGE = "merge"
    SPLIT = "split"


class Outcome(enum.StrEnum):
    """What a change did to one attribution."""

    # Moved to another entity.
    MOVED = "moved"
    # The entity it went to held the same identifier from the same record (or, for one given
    # by hand, by hand) already: that one is kept, this one is kept in the history only.
    JOINED = "joined"
    # Left where it was, for a person to check.
    FLAGGED = "flagged"


def entity_key(raw: str) -> str:
    """The one spelling of an entity: its id without `entities/` (events name entities as
    `entities/ID`; RecordLinked's entity_id and most attributions by hand are the bare id)."""
    value = raw.strip()
    return value[len(ENTITY_PREFIX) :].strip() if value.startswith(ENTITY_PREFIX) else value


def spellings(entity: str) -> list[str]:
    """Every way an entity may be stored on an attribution."""
    key = entity_key(entity)
    return [key, f"{ENTITY_PREFIX}{key}"] if key else []


@dataclass
class IdentityChange:
    """A merge or split as applied in one region (keyed by the entity service's change id).

    A merge: `entity` survives, `merged` were absorbed ("" when the region's copy did not say:
    a merge across regions). A split: `moved_records[i]` of this region moved from `entity` to
    `moved_to[i]`; `undoes` names the merge it undid. `undone_by`: the split that undid this
    merge, once applied here (before or after it)."""

    change_id: str
    kind: ChangeKind
    entity: str
    occurred_at: datetime
    applied_at: datetime
    decided_by: str = ""
    merged: tuple[str, ...] = ()
    moved_records: tuple[str, ...] = ()
    moved_to: tuple[str, ...] = ()
    undoes: str = ""
    undone_by: str = ""

    def destination(self, record: str) -> str | None:
        """Where this split moved `record`, if it moved it."""
        for moved, to in zip(self.moved_records, self.moved_to, strict=True):
            if moved == record:
                return to
        return None


@dataclass(frozen=True)
class AttributionMove:
    """One attribution as a change found it (`before`, with who decided it and when), and what
    the change did with it: the attribution's history, kept for good."""

    change_id: str
    kind: ChangeKind
    before: Attribution
    to_entity: str
    outcome: Outcome
    at: datetime
    # Why, for a person reading the history (and the review text of a flagged attribution).
    note: str = ""


@dataclass
class Applied:
    """What applying one change did in one region (for the log and the tests)."""

    moves: list[AttributionMove] = field(default_factory=list)

    def count(self, outcome: Outcome) -> int:
        return sum(1 for m in self.moves if m.outcome is outcome)
