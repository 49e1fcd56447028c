"""Deconfliction across installations without disclosure: keyed fingerprints of strong
identifiers, and the hub's matching of them.

Each region installation holds its own records. To learn that another region holds the same
phone number, VRM, email, handle, official identifier or bank account without either region (or the hub)
learning anything else, a region publishes, per identifier, an HMAC-SHA256 of the identifier in
normal form with its kind (`tel:+447700900123`) under a key that every region holds and the hub
does not. Equal identifiers give equal fingerprints under one key; without the key a fingerprint
can be neither reversed nor tested against a guess (the fingerprint of a guessed number needs
the key). The hub only compares fingerprints of different regions under the same key id and
tells each region of a pair the other region and whom to contact there, naming the fingerprint
by the receiving region's own opaque reference.

Keys rotate by id: during a rotation window a region publishes under the old and the new key,
and the hub matches within one key id (docs/operations.md).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from toex_kernel.regions import Region

from toex_entity.domain.records import Identifiers, RecordType

# A key shorter than the hash's own output would weaken it (RFC 2104 section 3).
MIN_KEY_BYTES = 32
DIGEST_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# The record type an identifier kind names (`tel:` a phone...): a notice about the identifier
# goes to the region's entities of that type, or, when it has none, to those carrying it.
KIND_RECORD_TYPE = {
    "tel": RecordType.PHONE,
    "vrm": RecordType.VEHICLE,
    "email": RecordType.EMAIL,
    "handle": RecordType.ONLINE_ACCOUNT,
    "id": RecordType.PERSON,
    # A bank account (`bank:GB:<sort code>:<number>`, `bank:IBAN:...`) is no record of its own:
    # the persons holding it (HOLDS_ACCOUNT relations) are told.
    "bank": RecordType.PERSON,
}
# Kinds that are relation targets (the relations table), not index keys of records.
RELATION_KINDS = ("bank",)


class KeyFileError(ValueError):
    """The deconfliction key file is not usable (the message says why, never the key)."""


@dataclass(frozen=True)
class FingerprintKey:
    key_id: str
    secret: bytes = field(repr=False)


def parse_keys(text: str) -> tuple[FingerprintKey, ...]:
    """Keys from the key file: one per line, `<key id> <key in base64>`, at least 32 bytes of
    key; blank lines and lines starting with `#` are skipped. Every key listed is current:
    fingerprints are published under each (two during a rotation)."""
    keys: list[FingerprintKey] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeyFileError(f"line {number}: expected `<key id> <key in base64>`")
        key_id, encoded = parts
        if not _KEY_ID.match(key_id):
            raise KeyFileError(f"line {number}: a key id is 1-64 letters, digits, '.', '_' or '-'")
        try:
            secret = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileError(f"line {number}: the key of {key_id} is not base64") from None
        if len(secret) < MIN_KEY_BYTES:
            raise KeyFileError(
                f"line {number}: the key of {key_id} has {len(secret)} bytes; at least {MIN_KEY_BYTES}"
            )
        if any(k.key_id == key_id for k in keys):
            raise KeyFileError(f"line {number}: key id {key_id} is listed twice")
        keys.append(FingerprintKey(key_id, secret))
    if not keys:
        raise KeyFileError("no key in the file")
    return tuple(keys)


def fingerprint(key: FingerprintKey, identifier: str) -> bytes:
    """HMAC-SHA256 of an identifier in normal form with its kind (an index key, `tel:+44...`)."""
    return hmac.new(key.secret, identifier.encode("utf-8"), hashlib.sha256).digest()


def identifier_keys(identifiers: Identifiers) -> list[str]:
    """The identifiers fingerprinted: every strong identifier, in normal form with its kind."""
    return identifiers.keys()


def kind_of(identifier: str) -> RecordType | None:
    return KIND_RECORD_TYPE.get(identifier.split(":", 1)[0])


def notice_targets(
    identifier: str, holders: Iterable[tuple[str, RecordType]]
) -> list[tuple[str, RecordType]]:
    """The entities (id, type) of the region holding `identifier` that a match is told to: those
    of the identifier's own type (a phone entity for a number) or, when there are none, every
    entity carrying it (a person recorded with the number)."""
    found = sorted(set(holders))
    own = [h for h in found if h[1] is kind_of(identifier)]
    return own or found


# --- the hub's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class Sighting:
    """A region holds a fingerprint, under its own reference."""

    region: Region
    ref: str


@dataclass(frozen=True)
class MatchNotice:
    """Tell `to` that its fingerprint `ref` is held by `other` too."""

    to: Region
    ref: str
    other: Region


def match_notices(new: Sighting, held: Iterable[Sighting]) -> list[MatchNotice]:
    """A fingerprint `new`'s region has just published, against the regions already holding
    it under the same key id: for each other region, a notice to both sides, each naming only
    the other region and its own reference. A region never matches itself."""
    notices: list[MatchNotice] = []
    for other in sorted({h.region: h for h in held if h.region is not new.region}.values(), key=_by_region):
        notices.append(MatchNotice(new.region, new.ref, other.region))
        notices.append(MatchNotice(other.region, other.ref, new.region))
    return notices


def _by_region(sighting: Sighting) -> str:
    return sighting.region.value
