"""Relations between entities (person uses phone, holds account, lives at address...), each
with the source record that says so, its 3x5x2 grading and the time span it held; addresses as
keys (normal UK postcode and premises); the person attributes a mule analysis reads."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from datetime import date, datetime

from toex_kernel.errors import Violations

from toex_entity.domain import normalise
from toex_entity.domain.records import Grading


class RelationKind(enum.StrEnum):
    USES_PHONE = "USES_PHONE"
    OWNS_VEHICLE = "OWNS_VEHICLE"
    DRIVES_VEHICLE = "DRIVES_VEHICLE"
    HOLDS_ACCOUNT = "HOLDS_ACCOUNT"
    LIVES_AT = "LIVES_AT"
    USES_DEVICE = "USES_DEVICE"
    ASSOCIATED_WITH = "ASSOCIATED_WITH"
    USES_EMAIL = "USES_EMAIL"
    USES_ONLINE_ACCOUNT = "USES_ONLINE_ACCOUNT"


@dataclass(frozen=True)
class Relation:
    """`subject` (a person entity) `kind` `target` (an entity id, or an address key for
    LIVES_AT), as the source record says, from `valid_from` to `valid_to` (either open). For
    HOLDS_ACCOUNT `valid_from` is when the account was opened."""

    region: str
    kind: RelationKind
    subject: str
    target: str
    source_system: str
    source_record_id: str
    grading: Grading
    valid_from: date | None = None
    valid_to: date | None = None

    def validate(self) -> None:
        problems = Violations()
        if not self.subject:
            problems.add("subject", "required")
        if not self.target:
            problems.add("target", "required")
        elif self.subject == self.target:
            problems.add("target", "a relation joins two different entities")
        if self.kind == RelationKind.LIVES_AT and not self.target.startswith("addr:"):
            problems.add("target", "LIVES_AT names an address key (addr:<postcode>|<premises>)")
        if not self.source_system or not self.source_record_id:
            problems.add("source", "the source system and record id that say so are required")
        if self.grading.source_evaluation not in (1, 2, 3):
            problems.add("grading.source_evaluation", "1, 2 or 3")
        if self.grading.assessment not in ("A", "B", "C", "D", "E"):
            problems.add("grading.assessment", "A to E")
        if self.valid_from and self.valid_to and self.valid_to < self.valid_from:
            problems.add("valid_to", "ends before it starts")
        problems.raise_if_any()


@dataclass(frozen=True)
class StoredRelation:
    """A relation as stored, with its provenance: when and by whom it was recorded."""

    relation: Relation
    recorded_at: datetime
    recorded_by: str

    def other_end(self, entity_id: str) -> str:
        """The end that is not `entity_id` (an entity id, or an account or address key)."""
        r = self.relation
        return r.target if r.subject == entity_id else r.subject

    @property
    def keyed(self) -> bool:
        """The target is a key (an account or address), not an entity."""
        return self.relation.target.startswith(("addr:", "bank:"))


_PREMISES_SPACE = re.compile(r"[\s,]+")
_PREMISES_NUMBER = re.compile(r"^(flat \w+ )?\d+[a-z]?\b")


def address_key(postcode: str, premises: str) -> str:
    """An address as a key: the normal postcode and the premises (house number or name, flat)
    folded, so `3 Station Road, S40 1AA` and `3 station rd s401aa` meet on `addr:S40 1AA|3`.
    The street is left out: the postcode and premises already name the address."""
    code = normalise.postcode(postcode)
    if not code:
        raise normalise.NormaliseError("an address key needs a postcode")
    folded = normalise.fold(premises)
    number = _PREMISES_NUMBER.match(folded)
    if number:
        folded = number.group(0)
    folded = _PREMISES_SPACE.sub(" ", folded).strip().upper()
    if not folded:
        raise normalise.NormaliseError("an address key needs the premises (number or name)")
    return f"addr:{code}|{folded}"


@dataclass(frozen=True)
class PersonAttributes:
    """What the records say of a person's circumstances, as recorded (nothing inferred)."""

    occupation: str = ""
    student: bool = False
    nationality: str = ""  # ISO 3166-1 alpha-2 as recorded, "" when not
    visa_type: str = ""  # as recorded ("Student", "Graduate", "Skilled Worker"...)


MAX_DEPTH = 3
MAX_NODES = 500


@dataclass(frozen=True)
class GraphNode:
    """An entity (`node_type` its record type) or an account or address key."""

    id: str
    node_type: str
    label: str
    depth: int


@dataclass
class Neighbourhood:
    nodes: list[GraphNode]
    edges: list[StoredRelation]
    truncated: bool = False


def key_node(key: str, depth: int) -> GraphNode:
    """A node for an account (`bank:...`) or address (`addr:...`) key, labelled by its value."""
    kind, _, value = key.partition(":")
    if kind == "bank":
        return GraphNode(key, "BANK_ACCOUNT", value.split(":", 1)[1] if ":" in value else value, depth)
    return GraphNode(key, "ADDRESS", value.replace("|", ", "), depth)


def reason(stored: StoredRelation) -> str:
    """Why an edge is there, in words: kind, source record, grading, time span."""
    r = stored.relation
    text = f"{r.kind.value} per {r.source_system}/{r.source_record_id}, graded {r.grading}"
    if r.valid_from:
        text += f", from {r.valid_from.isoformat()}"
    if r.valid_to:
        text += f", until {r.valid_to.isoformat()}"
    return text
