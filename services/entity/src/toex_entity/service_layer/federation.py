"""Deconfliction across installations (domain.fingerprints), one function per use case.

A region installation publishes the fingerprints of its records' strong identifiers
(`publish_fingerprints`, from its own RecordLinked events and a periodic `backfill` for records
from before, updated records and new keys) and, told by the hub that another region holds one,
raises its own DeconflictionNotice for its entities carrying it (`on_match`); an identifier
already known to be held elsewhere tells a newly linked entity at once (`on_record_linked`).
The hub matches the fingerprints of different regions (`match_fingerprints`). Nothing here
sees another region's values, records or entities: only region codes and references.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime

from toex_kernel.errors import InvalidArgument
from toex_kernel.regions import Region

from toex_entity.domain.events import (
    DeconflictionMatched,
    IdentifiersFingerprinted,
    RemoteDeconflictionRaised,
)
from toex_entity.domain.fingerprints import (
    DIGEST_BYTES,
    FingerprintKey,
    Sighting,
    fingerprint,
    match_notices,
    notice_targets,
)
from toex_entity.service_layer.ports import EntityUnitOfWork

# Fingerprints per event (about 70 bytes each with its reference): a few tens of KiB.
FINGERPRINTS_PER_EVENT = 1000
_REF = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class UnknownReference(InvalidArgument):
    """The hub named a fingerprint reference this region never gave."""


# --- a region's side -----------------------------------------------------------------------


async def publish_fingerprints(
    uow: EntityUnitOfWork,
    region: Region,
    keys: Sequence[FingerprintKey],
    identifiers: Sequence[str],
    now: datetime,
) -> int:
    """Publish, under each key, the fingerprints of those `identifiers` not published under it
    before (each with a new reference of the region's own). Returns how many."""
    wanted = sorted(set(identifiers))
    published = 0
    if not wanted:
        return 0
    for key in keys:
        fresh = await uow.federation.claim_identifiers(key.key_id, wanted, now)
        for start in range(0, len(fresh), FINGERPRINTS_PER_EVENT):
            chunk = fresh[start : start + FINGERPRINTS_PER_EVENT]
            uow.record(
                IdentifiersFingerprinted(
                    region, key.key_id, tuple((fingerprint(key, ident), ref) for ident, ref in chunk)
                )
            )
        published += len(fresh)
    return published


async def tell_holders(
    uow: EntityUnitOfWork, region: Region, identifier: str, other: Region, contact_role: str
) -> int:
    """`other` holds `identifier` too: each of the region's entities it concerns gets a notice
    (once per entity and other region), with the region's own records only."""
    told = 0
    for entity_id, entity_type in notice_targets(identifier, await uow.federation.entities_with(identifier)):
        if not await uow.repo.claim_deconfliction(entity_id, region, other):
            continue
        held = await uow.repo.records_of([entity_id])
        records = tuple(sorted(r.name for r in held if r.region is region))
        uow.record(RemoteDeconflictionRaised(entity_id, entity_type, region, other, records, contact_role))
        told += 1
    return told


async def on_record_linked(
    uow: EntityUnitOfWork,
    region: Region,
    keys: Sequence[FingerprintKey],
    identifiers: Sequence[str],
    now: datetime,
) -> int:
    """A record of the region was linked: publish what is new of its identifiers, and tell its
    entity at once of other regions already known to hold one of them. Returns notices raised."""
    await publish_fingerprints(uow, region, keys, identifiers, now)
    holders = await uow.federation.remote_holders(sorted(set(identifiers)))
    if not holders:
        return 0
    await uow.lock_resolution()  # membership stays as read while the notices are raised
    told = 0
    for identifier, others in sorted(holders.items()):
        for other, contact_role in others:
            told += await tell_holders(uow, region, identifier, other, contact_role)
    return told


async def backfill(
    uow: EntityUnitOfWork, region: Region, key: FingerprintKey, limit: int, now: datetime
) -> int:
    """Publish up to `limit` identifiers the region's records carry that were never published
    under `key` (records from before, updated records, a new key). Returns how many."""
    missing = await uow.federation.unpublished_identifiers(key.key_id, limit)
    return await publish_fingerprints(uow, region, [key], missing, now)


async def on_match(
    uow: EntityUnitOfWork, region: Region, ref: str, other: Region, contact_role: str, now: datetime
) -> int:
    """The hub says `other` holds the identifier of the region's reference `ref` too. Returns
    the notices raised (none when every entity concerned was told already)."""
    if other is region or other is Region.NATIONAL:
        raise InvalidArgument.field("other_region", f"a match names another region, not {other.value}")
    identifier = await uow.federation.identifier_of_ref(ref)
    if identifier is None:
        raise UnknownReference.field("fingerprint_ref", "no fingerprint of this region has that reference")
    role = contact_role.strip()[:200] or f"{other.value} ROCU"
    await uow.lock_resolution()
    await uow.federation.add_remote_holder(identifier, other, role, now)
    return await tell_holders(uow, region, identifier, other, role)


# --- the hub's side ------------------------------------------------------------------------


def check_fingerprints(key_id: str, fingerprints: Sequence[tuple[bytes, str]]) -> None:
    """What a region sends the hub is what the hub stores: refuse anything else."""
    if not _KEY_ID.match(key_id):
        raise InvalidArgument.field("key_id", "1-64 letters, digits, '.', '_' or '-'")
    for index, (digest, ref) in enumerate(fingerprints):
        if len(digest) != DIGEST_BYTES:
            raise InvalidArgument.field(f"fingerprints[{index}].digest", f"{DIGEST_BYTES} bytes")
        if not _REF.match(ref):
            raise InvalidArgument.field(f"fingerprints[{index}].ref", "1-64 letters, digits, '_' or '-'")


async def match_fingerprints(
    uow: EntityUnitOfWork,
    region: Region,
    key_id: str,
    fingerprints: Sequence[tuple[bytes, str]],
    contact_role: Callable[[Region], str],
    now: datetime,
) -> int:
    """`region`'s fingerprints under `key_id`, against every other region's: each pair of
    regions holding one gets a notice each, addressed to it alone, once (a fingerprint seen again
    matches nothing new; one whose reference changed is matched again for the new reference).
    Returns the notices sent."""
    if region is Region.NATIONAL:
        raise InvalidArgument.field("label.region", "fingerprints come from a region installation")
    check_fingerprints(key_id, fingerprints)
    await uow.lock_matching()
    fresh = await uow.federation.add_sightings(region, key_id, fingerprints, now)
    if not fresh:
        return 0
    held = await uow.federation.sightings(key_id, [digest for digest, _ in fresh])
    sent = 0
    for digest, ref in fresh:
        sightings = [Sighting(r, f) for r, f in held.get(digest, [])]
        for notice in match_notices(Sighting(region, ref), sightings):
            uow.record(DeconflictionMatched(notice.to, notice.ref, notice.other, contact_role(notice.other)))
            sent += 1
    return sent
