"""Deconfliction across installations on PostgreSQL (service_layer.ports.FederationRepository)."""

from __future__ import annotations

import secrets
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import TypeVar

from sqlalchemy import ColumnElement, and_, literal, or_, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from toex_kernel.regions import Region

from toex_entity.adapters.tables import (
    entities,
    hub_fingerprints,
    identifier_fingerprints,
    record_keys,
    relations,
    remote_holders,
    source_records,
)
from toex_entity.domain.fingerprints import KIND_RECORD_TYPE, RELATION_KINDS
from toex_entity.domain.model import EntityState
from toex_entity.domain.records import RecordType
from toex_entity.domain.relations import RelationKind

# The index keys that are strong identifiers (`tel:...`): a range of the primary key each.
_KINDS = tuple(f"{kind}:" for kind in KIND_RECORD_TYPE if kind not in RELATION_KINDS)
# Rows per statement: well within PostgreSQL's 32,767 bind parameters, whatever an event holds.
CHUNK = 2000
T = TypeVar("T")


def _chunks(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + CHUNK] for i in range(0, len(items), CHUNK)]


def _relation_kinds() -> ColumnElement[bool]:
    """`target` in the range of a kind that relations hold (`'bank:' <= target < 'bank;'`)."""
    return or_(*(and_(relations.c.target >= f"{k}:", relations.c.target < f"{k};") for k in RELATION_KINDS))


def _kind_ranges() -> ColumnElement[bool]:
    """`key` in one of the identifier kinds' ranges (`'tel:' <= key < 'tel;'`): index scans."""
    return or_(
        *(and_(record_keys.c.key >= prefix, record_keys.c.key < prefix[:-1] + ";") for prefix in _KINDS)
    )


class SqlFederationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # --- a region's side ---------------------------------------------------------------

    async def claim_identifiers(
        self, key_id: str, identifiers: Sequence[str], at: datetime
    ) -> list[tuple[str, str]]:
        fresh: list[tuple[str, str]] = []
        for chunk in _chunks(identifiers):
            # Random, not time-ordered: a reference says nothing, not even when it was made.
            rows = [
                {"identifier": i, "key_id": key_id, "ref": secrets.token_hex(16), "at": at} for i in chunk
            ]
            result = await self.session.execute(
                pg_insert(identifier_fingerprints)
                .values(rows)
                .on_conflict_do_nothing(index_elements=["identifier", "key_id"])
                .returning(identifier_fingerprints.c.identifier, identifier_fingerprints.c.ref)
            )
            fresh += [(r.identifier, r.ref) for r in result]
        return sorted(fresh)

    async def unpublished_identifiers(self, key_id: str, limit: int) -> list[str]:
        published = (
            select(literal(1))
            .where(
                identifier_fingerprints.c.identifier == record_keys.c.key,
                identifier_fingerprints.c.key_id == key_id,
            )
            .exists()
        )
        rows = await self.session.execute(
            select(record_keys.c.key)
            .where(_kind_ranges(), ~published)
            .group_by(record_keys.c.key)
            .order_by(record_keys.c.key)
            .limit(limit)
        )
        found = [r.key for r in rows]
        if len(found) < limit:
            # Bank accounts: the targets of the region's HOLDS_ACCOUNT relations.
            held = (
                select(literal(1))
                .where(
                    identifier_fingerprints.c.identifier == relations.c.target,
                    identifier_fingerprints.c.key_id == key_id,
                )
                .exists()
            )
            rows = await self.session.execute(
                select(relations.c.target)
                .where(_relation_kinds(), relations.c.kind == RelationKind.HOLDS_ACCOUNT.value, ~held)
                .group_by(relations.c.target)
                .order_by(relations.c.target)
                .limit(limit - len(found))
            )
            found += [r.target for r in rows]
        return found

    async def identifier_of_ref(self, ref: str) -> str | None:
        row = (
            await self.session.execute(
                select(identifier_fingerprints.c.identifier).where(identifier_fingerprints.c.ref == ref)
            )
        ).first()
        return row.identifier if row else None

    async def add_remote_holder(
        self, identifier: str, other: Region, contact_role: str, at: datetime
    ) -> bool:
        row = (
            await self.session.execute(
                pg_insert(remote_holders)
                .values(identifier=identifier, other_region=other.value, contact_role=contact_role, at=at)
                .on_conflict_do_nothing()
                .returning(remote_holders.c.identifier)
            )
        ).first()
        return row is not None

    async def remote_holders(self, identifiers: Sequence[str]) -> dict[str, list[tuple[Region, str]]]:
        if not identifiers:
            return {}
        rows = await self.session.execute(
            select(remote_holders.c.identifier, remote_holders.c.other_region, remote_holders.c.contact_role)
            .where(remote_holders.c.identifier.in_(list(identifiers)))
            .order_by(remote_holders.c.identifier, remote_holders.c.other_region)
        )
        found: dict[str, list[tuple[Region, str]]] = defaultdict(list)
        for r in rows:
            found[r.identifier].append((Region(r.other_region), r.contact_role))
        return dict(found)

    async def entities_with(self, identifier: str) -> list[tuple[str, RecordType]]:
        if identifier.split(":", 1)[0] in RELATION_KINDS:
            held = await self.session.execute(
                select(entities.c.id, entities.c.entity_type)
                .distinct()
                .select_from(relations.join(entities, entities.c.id == relations.c.subject))
                .where(
                    relations.c.target == identifier,
                    relations.c.kind == RelationKind.HOLDS_ACCOUNT.value,
                    entities.c.state == EntityState.ACTIVE.value,
                )
                .order_by(entities.c.id)
            )
            return [(r.id, RecordType(r.entity_type)) for r in held]
        rows = await self.session.execute(
            select(entities.c.id, entities.c.entity_type)
            .distinct()
            .select_from(
                record_keys.join(source_records, source_records.c.id == record_keys.c.record_id).join(
                    entities, entities.c.id == source_records.c.entity_id
                )
            )
            .where(record_keys.c.key == identifier, entities.c.state == EntityState.ACTIVE.value)
            .order_by(entities.c.id)
        )
        return [(r.id, RecordType(r.entity_type)) for r in rows]

    # --- the hub's side ----------------------------------------------------------------

    async def add_sightings(
        self, region: Region, key_id: str, fingerprints: Sequence[tuple[bytes, str]], at: datetime
    ) -> list[tuple[bytes, str]]:
        # One row per digest (the last reference given wins, as in the region's own table).
        latest = list({digest: ref for digest, ref in fingerprints}.items())
        fresh: list[tuple[bytes, str]] = []
        for chunk in _chunks(latest):
            statement = pg_insert(hub_fingerprints).values(
                [
                    {"key_id": key_id, "digest": digest, "region": region.value, "ref": ref, "at": at}
                    for digest, ref in chunk
                ]
            )
            # Seen before under the same reference: nothing new. Under another (the region lost
            # its table and gave new references): the new one is kept and matched again.
            result = await self.session.execute(
                statement.on_conflict_do_update(
                    index_elements=["key_id", "digest", "region"],
                    set_={"ref": statement.excluded.ref, "at": statement.excluded.at},
                    where=hub_fingerprints.c.ref != statement.excluded.ref,
                ).returning(hub_fingerprints.c.digest, hub_fingerprints.c.ref)
            )
            fresh += [(bytes(r.digest), r.ref) for r in result]
        return sorted(fresh)

    async def sightings(self, key_id: str, digests: Sequence[bytes]) -> dict[bytes, list[tuple[Region, str]]]:
        found: dict[bytes, list[tuple[Region, str]]] = defaultdict(list)
        for chunk in _chunks(list(digests)):
            rows = await self.session.execute(
                select(hub_fingerprints.c.digest, hub_fingerprints.c.region, hub_fingerprints.c.ref)
                .where(hub_fingerprints.c.key_id == key_id, hub_fingerprints.c.digest.in_(list(chunk)))
                .order_by(hub_fingerprints.c.digest, hub_fingerprints.c.region)
            )
            for r in rows:
                found[bytes(r.digest)].append((Region(r.region), r.ref))
        return dict(found)
