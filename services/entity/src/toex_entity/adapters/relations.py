"""Relations, person attributes and bank accounts on PostgreSQL (domain.relations,
domain.accounts), and what the mule analysis reads of a region."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

import asyncpg
from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from toex_common.db import session_driver
from toex_kernel.ids import new_id

from toex_entity.adapters.tables import mule_alerts, person_attributes, relations
from toex_entity.domain.mules import SHARED_KINDS, Grouped
from toex_entity.domain.records import Grading, Handling
from toex_entity.domain.relations import PersonAttributes, Relation, RelationKind, StoredRelation

# The analysis reads millions of rows: asyncpg directly (no ORM row objects), and PostgreSQL
# groups the shared keys, so that keys only one person has (most addresses and phones) never
# reach Python.
_ANALYSIS_HOLDS = (
    "SELECT subject, target, valid_from FROM relations WHERE region = $1 AND kind = 'HOLDS_ACCOUNT'"
)
_ANALYSIS_ASSOCIATES = "SELECT subject, target FROM relations WHERE region = $1 AND kind = 'ASSOCIATED_WITH'"
_ANALYSIS_SHARED = """
SELECT kind, target, array_agg(subject)
FROM relations WHERE region = $1 AND kind = ANY($2::text[])
GROUP BY kind, target
HAVING min(subject) <> max(subject)
"""
# Relations stored at once from this many rows on go in by COPY (a bulk ingest's chunk).
COPY_FROM = 50
_COLUMNS = [c.name for c in relations.c]
_STAGE = (
    "CREATE TEMP TABLE IF NOT EXISTS relations_stage (LIKE relations INCLUDING DEFAULTS) "
    "ON COMMIT DELETE ROWS"
)
# Each relation new per source record (the table's unique key), from one array per column.
_INSERT_NEW = (
    f"INSERT INTO relations ({', '.join(_COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(
        f"CAST(${i} AS {column.type.compile(dialect=postgresql.dialect())}[])"
        for i, column in enumerate(relations.c, 1)
    )
    + ") ON CONFLICT DO NOTHING RETURNING id"
)
_FROM_STAGE = (
    "WITH staged AS (DELETE FROM relations_stage RETURNING *) "
    "INSERT INTO relations SELECT * FROM staged ON CONFLICT DO NOTHING RETURNING id"
)
# Rows of a merged entity that would repeat one of the survivor's (same source record) once moved.
_DROP_DUPLICATES = """
DELETE FROM relations m USING relations s
WHERE m.{end} = ANY(:merged) AND s.{end} = :into
  AND s.region = m.region AND s.kind = m.kind AND s.source_system = m.source_system
  AND s.source_record_id = m.source_record_id
  AND s.{other} = m.{other}
"""
# What a merge is about to do to relations, kept whole (migration 0009).
_SNAPSHOT = """
INSERT INTO relation_moves (change_id, relation_id, end_moved, from_entity, row)
SELECT :change, r.id, 'row', '', to_jsonb(r)
FROM relations r WHERE r.subject = ANY(:merged) OR r.target = ANY(:merged)
ON CONFLICT DO NOTHING
"""
_MOVE_BACK = """
UPDATE relations r SET {end} = m.row->>'{end}'
FROM relation_moves m
WHERE m.change_id = :change AND m.end_moved = 'row' AND r.id = m.relation_id
  AND r.{end} = :survivor AND m.row->>'{end}' <> :survivor
"""
_RESTORE_DROPPED = """
INSERT INTO relations
SELECT (jsonb_populate_record(NULL::relations, m.row)).*
FROM relation_moves m
WHERE m.change_id = :change AND m.end_moved = 'row'
  AND NOT EXISTS (SELECT 1 FROM relations r WHERE r.id = m.relation_id)
ON CONFLICT DO NOTHING
"""
# A relation said by a record split out: the same region and source record as the record.
_FOLLOW_SPLIT = """
UPDATE relations r SET {end} = :split_off
FROM source_records s
WHERE s.id = ANY(:records) AND r.{end} = :entity
  AND r.region = s.region AND r.source_system = s.source_system
  AND r.source_record_id = s.source_record_id
"""
_ANALYSIS_ATTRIBUTES = """
SELECT r.entity_id, bool_or(a.student), max(a.occupation), max(a.nationality), max(a.visa_type)
FROM person_attributes a JOIN source_records r ON r.id = a.record_id
WHERE r.region = $1
GROUP BY r.entity_id
"""


class SqlRelationRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def add_relations(
        self, items: Sequence[Relation], recorded_by: str, at: datetime, job: str = ""
    ) -> int:
        """Stores each relation once per source record; returns how many were new."""
        return len(await self.store_relations(items, recorded_by, at, job))

    async def store_relations(
        self, items: Sequence[Relation], recorded_by: str, at: datetime, job: str = "", *, fresh: bool = False
    ) -> list[Relation]:
        """Stores each relation once per source record; returns those that were new. `fresh`:
        said by records stored in this transaction, so almost surely new (bulk ingest)."""
        if not items:
            return []
        # In the table's column order (_COLUMNS), for COPY; as dicts for the executemany.
        rows = [
            (
                new_id(),
                r.region,
                r.kind.value,
                r.subject,
                r.target,
                r.source_system,
                r.source_record_id,
                r.grading.source_evaluation,
                r.grading.assessment,
                r.grading.handling.value,
                r.grading.conditions,
                r.valid_from,
                r.valid_to,
                at,
                recorded_by,
                job,
            )
            for r in items
        ]
        if len(rows) >= COPY_FROM:
            created = await self._copy_new(rows, fresh=fresh)
        else:
            # One statement of one array per column, prepared once per connection and sent
            # on the driver: a single record's resolution adds its relations in a fraction of
            # a millisecond (SQLAlchemy compiled a multi-row INSERT for each call).
            driver = await session_driver(self.session)
            created = {row[0] for row in await driver.fetch(_INSERT_NEW, *map(list, zip(*rows, strict=True)))}
        return [r for r, row in zip(items, rows, strict=True) if row[0] in created]

    async def _copy_new(self, rows: list[tuple[Any, ...]], *, fresh: bool = False) -> set[str]:
        """A bulk ingest's relations: COPY into a session-local staging table, then one
        INSERT ... SELECT that keeps those new per source record (the same rule as the
        executemany path) and empties the stage: no bind parameters per row, no statement
        compiled per batch. `fresh` rows are first copied straight in, under a savepoint: a
        relation said before under the same source record (RecordRelations may have said it)
        fails the copy, which is undone, and the rows take the staged way."""
        driver = await session_driver(self.session)
        if fresh:
            await driver.execute("SAVEPOINT fresh_relations")
            try:
                await driver.copy_records_to_table("relations", records=rows, columns=_COLUMNS)
            except asyncpg.UniqueViolationError:
                await driver.execute("ROLLBACK TO SAVEPOINT fresh_relations")
            else:
                await driver.execute("RELEASE SAVEPOINT fresh_relations")
                return {row[0] for row in rows}
        await driver.execute(_STAGE)
        await driver.copy_records_to_table("relations_stage", records=rows, columns=_COLUMNS)
        return {row[0] for row in await driver.fetch(_FROM_STAGE)}

    async def follow_merge(self, merged: Sequence[str], into: str, change_id: str = "") -> None:
        """Relations of merged entities now join the survivor: a relation the survivor already
        has from the same source record is kept once, and one between two of the merged
        entities (now one) is dropped. With the merge's change id, every relation it touches is
        kept as it was (`relation_moves`), so that undoing the merge puts it back."""
        params = {"merged": list(merged), "into": into}
        if change_id:
            await self.session.execute(text(_SNAPSHOT), {**params, "change": change_id})
        for end, other in (("subject", "target"), ("target", "subject")):
            await self.session.execute(text(_DROP_DUPLICATES.format(end=end, other=other)), params)
            await self.session.execute(
                update(relations).where(relations.c[end].in_(merged)).values({end: into})
            )
        await self.session.execute(
            delete(relations).where(relations.c.subject == into, relations.c.target == into)
        )

    async def undo_merge(self, change_id: str, survivor: str) -> None:
        """Each relation the merge moved goes back to the entity it came from (an end still on
        the survivor); each it dropped comes back as it was."""
        for end in ("subject", "target"):
            await self.session.execute(
                text(_MOVE_BACK.format(end=end)), {"change": change_id, "survivor": survivor}
            )
        await self.session.execute(text(_RESTORE_DROPPED), {"change": change_id})

    async def follow_split(self, entity: str, split_off: str, records: Sequence[str]) -> None:
        """Relations said by the records split out of `entity` follow them to `split_off`."""
        if not records:
            return
        for end in ("subject", "target"):
            await self.session.execute(
                text(_FOLLOW_SPLIT.format(end=end)),
                {"entity": entity, "split_off": split_off, "records": list(records)},
            )

    async def relations_of(self, entity_ids: Sequence[str]) -> list[dict[str, Any]]:
        rows = await self.session.execute(
            select(relations).where(relations.c.subject.in_(entity_ids) | relations.c.target.in_(entity_ids))
        )
        return [dict(row._mapping) for row in rows]

    async def relations_touching(self, entity_id: str) -> list[StoredRelation]:
        """The relations with `entity_id` at either end, oldest recorded first."""
        rows = await self.session.execute(
            select(relations)
            .where((relations.c.subject == entity_id) | (relations.c.target == entity_id))
            .order_by(relations.c.recorded_at, relations.c.id)
        )
        return [
            StoredRelation(
                Relation(
                    row.region,
                    RelationKind(row.kind),
                    row.subject,
                    row.target,
                    row.source_system,
                    row.source_record_id,
                    Grading(
                        row.source_evaluation, row.assessment, Handling(row.handling), row.handling_conditions
                    ),
                    row.valid_from,
                    row.valid_to,
                ),
                row.recorded_at,
                row.recorded_by,
            )
            for row in rows
        ]

    async def claim_mule_alerts(
        self, region: str, clusters: Sequence[tuple[str, float]], at: datetime
    ) -> set[str]:
        """Notes the clusters (id, score) as alerted on; returns the ids not alerted on before."""
        if not clusters:
            return set()
        result = await self.session.execute(
            pg_insert(mule_alerts)
            .values(
                [
                    {"cluster_id": c, "region": region, "score": score, "detected_at": at}
                    for c, score in clusters
                ]
            )
            .on_conflict_do_nothing()
            .returning(mule_alerts.c.cluster_id)
        )
        return set(result.scalars())

    async def set_attributes(self, record_id: str, attrs: PersonAttributes) -> None:
        values = {
            "occupation": attrs.occupation,
            "student": attrs.student,
            "nationality": attrs.nationality,
            "visa_type": attrs.visa_type,
        }
        await self.session.execute(
            pg_insert(person_attributes)
            .values(record_id=record_id, **values)
            .on_conflict_do_update(index_elements=["record_id"], set_=values)
        )

    async def analysis_input(self, region: str) -> tuple[Grouped, dict[str, PersonAttributes]]:
        """A region's relations grouped and its persons' attributes (by entity), as the analysis
        reads them."""
        connection = await self.session.connection()
        raw = (await connection.get_raw_connection()).driver_connection
        accounts_of: dict[str, list[tuple[str, date | None]]] = defaultdict(list)
        for subject, target, opened in await raw.fetch(_ANALYSIS_HOLDS, region):  # type: ignore[union-attr]
            accounts_of[subject].append((target, opened))
        shared = {k.value: what for k, what in SHARED_KINDS.items()}
        sharers = {
            (shared[kind], target): set(persons)
            for kind, target, persons in await raw.fetch(_ANALYSIS_SHARED, region, list(shared))  # type: ignore[union-attr]
        }
        associates = [(a, b) for a, b in await raw.fetch(_ANALYSIS_ASSOCIATES, region)]  # type: ignore[union-attr]
        grouped = Grouped(dict(accounts_of), sharers, associates)
        attrs = {
            entity: PersonAttributes(
                occupation=occupation, student=student, nationality=nationality, visa_type=visa_type
            )
            for entity, student, occupation, nationality, visa_type in await raw.fetch(  # type: ignore[union-attr]
                _ANALYSIS_ATTRIBUTES, region
            )
        }
        return grouped, attrs
