"""Who a referral is about, as entity resolution changes its mind.

A subject is an entity id (`ent-1`; the tasking form `entities/ent-1` is the same subject) or,
while no entity is known, a number (`phone:+447700900123`). The entity service merges
entities (the merged ids redirect to the surviving one), splits them, and links records
holding a number to an entity; each region learns of the changes to its own records. What a
region has learnt is kept as aliases (a merged id or a number -> the entity it now stands for)
and as the identity changes applied, by change id: that is what makes a change applied twice,
or a merge arriving after the split that undid it, change nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

ENTITY_PREFIX = "entities/"
PHONE_PREFIX = "phone:"
# Aliases are followed at most this far (a chain of merges); a longer chain or a cycle stops.
MAX_ALIAS_HOPS = 16

MERGE = "MERGE"
SPLIT = "SPLIT"
LINK = "LINK"
NOTED = "NOTED"


def subject_key(raw: str) -> str:
    """The one spelling of a subject: the entity id without `entities/`; an E.164 number as
    `phone:+<digits>`."""
    value = raw.strip()
    if value.startswith(ENTITY_PREFIX):
        return value[len(ENTITY_PREFIX) :].strip()
    if value.startswith(PHONE_PREFIX):
        return phone_subject(value[len(PHONE_PREFIX) :])
    return value


def phone_subject(number: str) -> str:
    """`phone:+<digits>` for an E.164 number (spaces and punctuation dropped); anything else
    as it was typed, for it cannot be told which country's it is."""
    value = number.strip()
    digits = "".join(ch for ch in value if ch.isdigit())
    if value.startswith("+") and digits:
        return f"{PHONE_PREFIX}+{digits}"
    return f"{PHONE_PREFIX}{value}" if value else ""


def spellings(subject: str) -> set[str]:
    """Every way a subject may be stored (rows written before subjects had one spelling)."""
    key = subject_key(subject)
    if not key:
        return set()
    return {key} if key.startswith(PHONE_PREFIX) else {key, f"{ENTITY_PREFIX}{key}"}


@dataclass
class IdentityChange:
    """An identity change as applied in one region: a merge or split (keyed by the entity
    service's change id), a number linked to an entity (keyed by the number's subject), or a
    notice given once (keyed by what it was about).

    `rekeyed` holds (referral id, subject before, subject after) for each referral it moved;
    `absorbed` (referral id, id of the referral that took it in); `linked` the referrals it
    told of one another without combining them."""

    key: str
    kind: str
    entity: str = ""
    undoes: str = ""
    undone_by: str = ""
    at: datetime | None = None
    rekeyed: list[tuple[str, str, str]] = field(default_factory=list)
    absorbed: list[tuple[str, str]] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)

    def touched(self) -> list[str]:
        """Every referral the change moved, combined or linked, once each, in that order."""
        ids = [r[0] for r in self.rekeyed] + [a[1] for a in self.absorbed] + self.linked
        return list(dict.fromkeys(ids))
