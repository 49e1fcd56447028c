"""The entity repository on PostgreSQL (SQLAlchemy Core)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import and_, func, insert, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from toex_common.db import session_driver
from toex_kernel.regions import Region

from toex_entity.adapters.tables import (
    deconflictions,
    entities,
    entity_changes,
    job_subjects,
    learning_state,
    match_models,
    pair_decisions,
    person_sample,
    record_keys,
    review_tasks,
    source_records,
)
from toex_entity.domain import sample
from toex_entity.domain.matching import FEATURE_COLUMNS, Features, MatchModel
from toex_entity.domain.model import (
    ChangeKind,
    Entity,
    EntityChange,
    EntityState,
    Explanation,
    Move,
    PairDecision,
    PairVerdict,
    ReviewState,
    ReviewTask,
)
from toex_entity.domain.records import (
    NO_IDENTIFIERS,
    Grading,
    Handling,
    Identifiers,
    RecordType,
    SourceRecord,
    content_from_json,
    content_to_json,
)
from toex_entity.service_layer.ports import Candidate, EntityLink, KeyHit, SourceKey

_RECORD_COLUMNS = [c for c in source_records.c if c.name not in ("link_explanation",)]
# What an entity read shows of its records: no comparison features (the largest column, and
# never shown), and the links with their explanations.
_VIEW_COLUMNS = [c for c in source_records.c if c.name != "features"]


def _ids_json(ids: Identifiers) -> dict[str, list[str]]:
    return {
        "e164_numbers": list(ids.e164_numbers),
        "vrms": list(ids.vrms),
        "emails": list(ids.emails),
        "handles": list(ids.handles),
        "official_ids": list(ids.official_ids),
    }


def _ids(data: dict[str, Any]) -> Identifiers:
    return Identifiers(**{k: tuple(v) for k, v in data.items()})


def _link(row: Any) -> EntityLink:
    return EntityLink(
        row.id, row.link_method, row.link_probability, row.linked_by, row.linked_at, row.link_explanation
    )


def _record(row: Any, *, features: bool = True) -> SourceRecord:
    record_type = RecordType(row.record_type)
    return SourceRecord(
        id=row.id,
        region=Region(row.region),
        source_system=row.source_system,
        source_record_id=row.source_record_id,
        record_type=record_type,
        grading=Grading(
            row.source_evaluation, row.assessment, Handling(row.handling), row.handling_conditions
        ),
        content=content_from_json(record_type, row.content),
        identifiers=_ids(row.identifiers),
        ingested_at=row.ingested_at,
        ingested_by=row.ingested_by,
        entity_id=row.entity_id,
        content_hash=row.content_hash,
        features=row.features if features else None,
        job=row.job,
    )


# A batch of records of no job (every owner's bulk load) leaves `job` to its default.
_COPY_COLUMNS = [c.name for c in source_records.c if c.name != "job"]
_COPY_COLUMNS_WITH_JOB = [*_COPY_COLUMNS, "job"]
_ENTITY_COLUMNS = ["id", "entity_type", "state", "merged_into", "created_at", "updated_at"]
_NO_IDENTIFIERS_JSON = orjson.dumps(_ids_json(NO_IDENTIFIERS)).decode()


def _dumps(value: Any) -> str | None:
    """JSON text for a JSONB column in a COPY (orjson: the standard encoder was a tenth of
    bulk ingest's time)."""
    return None if value is None else orjson.dumps(value).decode()


def _record_row(record: SourceRecord, link: EntityLink) -> dict[str, Any]:
    """The record's row, JSON columns as JSON text (for COPY)."""
    identifiers = record.identifiers
    return {
        "id": record.id,
        "region": record.region.value,
        "source_system": record.source_system,
        "source_record_id": record.source_record_id,
        "record_type": record.record_type.value,
        "source_evaluation": record.grading.source_evaluation,
        "assessment": record.grading.assessment,
        "handling": record.grading.handling.value,
        "handling_conditions": record.grading.conditions,
        "content": _dumps(content_to_json(record.content)),
        "identifiers": (
            _NO_IDENTIFIERS_JSON if identifiers == NO_IDENTIFIERS else _dumps(_ids_json(identifiers))
        ),
        "features": _dumps(record.features),
        "content_hash": record.content_hash,
        "entity_id": record.entity_id,
        "ingested_at": record.ingested_at,
        "ingested_by": record.ingested_by,
        "link_method": link.method,
        "link_probability": link.probability,
        "link_explanation": _dumps(link.explanation),
        "linked_by": link.decided_by,
        "linked_at": link.at,
        "job": record.job,
    }


def _change(row: Any) -> EntityChange:
    return EntityChange(
        id=row.id,
        entity_id=row.entity_id,
        kind=ChangeKind(row.kind),
        others=tuple(row.others),
        moves=tuple(Move(m[0], m[1], m[2]) for m in row.moves),
        decided_by=row.decided_by,
        reason=row.reason,
        at=row.at,
        undone_by=row.undone_by,
        undoes=row.undoes,
    )


def _task(row: Any) -> ReviewTask:
    return ReviewTask(
        id=row.id,
        region=Region(row.region),
        record_id=row.record_id,
        candidate_record_id=row.candidate_record_id,
        explanation=Explanation.from_json(row.explanation),
        created_at=row.created_at,
        state=ReviewState(row.state),
        decided_by=row.decided_by,
        reason=row.reason,
        decided_at=row.decided_at,
    )


# Each record once, with the keys it was found under: a record met under several keys (a
# likely match shares most of them) is sent and decoded once. `{where}`: a filter on r.
_CANDIDATES = """
    SELECT array_agg(q.key) AS keys, r.id, r.entity_id, r.region, r.features
    FROM unnest(CAST(:keys AS text[])) AS q(key)
    CROSS JOIN LATERAL (
        SELECT k.record_id FROM record_keys k WHERE k.key = q.key LIMIT :per_key
    ) AS k
    JOIN source_records r ON r.id = k.record_id
    {where}
    GROUP BY r.id
"""
# Bulk resolution's hottest read, sent on the driver (numbered parameters, rows as asyncpg
# records): no result wrapping for the thousands of rows a batch reads.
_ALL_CANDIDATES = _CANDIDATES.format(where="").replace(":keys", "$1").replace(":per_key", "$2")


def _by_key(rows: Iterable[Any]) -> list[tuple[str, Candidate]]:
    """Rows of `_CANDIDATES` (asyncpg records or SQLAlchemy rows, unpacked by position), each
    candidate once per key it was found under."""
    found: list[tuple[str, Candidate]] = []
    for found_under, record_id, entity_id, region, features in rows:
        if features is not None:
            candidate = Candidate(record_id, entity_id, Region(region), features)
            found.extend((key, candidate) for key in found_under)
    return found


# Through the entity index, one entity at a time (OFFSET 0 keeps the planner from flattening
# the lateral into a join): a table loaded in bulk has no statistics until it is analysed, and
# the `IN (...)` form was then read whole, 30 ms a batch at 50,000 records (PostgreSQL's
# estimate for an entity id without statistics is hundreds of rows).
_REGIONS_OF = text(
    """
    SELECT DISTINCT q.id AS entity_id, r.region
    FROM unnest(CAST(:ids AS text[])) AS q(id)
    CROSS JOIN LATERAL (SELECT s.region FROM source_records s WHERE s.entity_id = q.id OFFSET 0) AS r
    """
)

_ADD_KEYS = text(
    """
    INSERT INTO record_keys (key, record_id)
    SELECT * FROM unnest(CAST(:keys AS text[]), CAST(:records AS text[]))
    ON CONFLICT DO NOTHING
    """
)

_FIND_EXISTING = text(
    "SELECT "
    + ", ".join(f"r.{c.name}" for c in _RECORD_COLUMNS)
    + """
    FROM unnest(CAST(:regions AS text[]), CAST(:systems AS text[]), CAST(:ids AS text[]))
        AS q(region, source_system, source_record_id)
    JOIN source_records r
      ON r.region = q.region AND r.source_system = q.source_system
     AND r.source_record_id = q.source_record_id
    """
).columns(*_RECORD_COLUMNS)


# The person sample (domain/sample.py), kept in the transaction that stores the records: the
# records whose key is under the stored threshold enter (their features taken from the rows
# just written, so they are sent once), and the sample's size is counted in the same statement.
# The state row is locked first, so two writers never count past each other.
_SAMPLE_ADD = """
    WITH state AS (
        SELECT threshold FROM person_sample_state WHERE name = 'persons' FOR UPDATE
    ), entered AS (
        INSERT INTO person_sample (record_id, sample_key, features)
        SELECT r.id, q.sample_key, r.features
        FROM unnest(CAST($1 AS text[]), CAST($2 AS float8[])) AS q(id, sample_key)
        CROSS JOIN state
        JOIN source_records r ON r.id = q.id
        WHERE q.sample_key < state.threshold AND r.features IS NOT NULL
        RETURNING 1
    )
    UPDATE person_sample_state SET size = size + (SELECT count(*) FROM entered)
    WHERE name = 'persons'
    RETURNING threshold, size
    """  # sent on the driver (numbered parameters): a single record's resolution sends it too

# Down to the `cap` smallest keys: the largest key kept becomes the threshold, and the size is
# counted again (so rows that left with their records are counted out too).
_SAMPLE_TRIM = text(
    """
    WITH cut AS (
        SELECT sample_key FROM person_sample ORDER BY sample_key OFFSET :cap - 1 LIMIT 1
    ), gone AS (
        DELETE FROM person_sample WHERE sample_key > (SELECT sample_key FROM cut) RETURNING 1
    )
    UPDATE person_sample_state
    SET threshold = coalesce((SELECT sample_key FROM cut), threshold),
        size = (SELECT count(*) FROM person_sample) - (SELECT count(*) FROM gone)
    WHERE name = 'persons'
    RETURNING threshold, size
    """
)


class SampleKeeper:
    """One per process and database: the sample's cap, and the threshold last read from the
    database. A record whose key is not under it cannot enter, so the statement that would add
    it is not sent (at a million stored persons and the default cap, four in five incremental
    resolutions send none). The threshold only falls (a trim lowers it), and it is taken only
    from a committed value, never from a trim not yet committed, so a record is never left out
    by a stale value: a stale one only sends a statement that adds nothing."""

    def __init__(self, cap: int = sample.DEFAULT_CAP) -> None:
        self.cap = cap
        self.threshold = 1.0


class SqlEntityRepository:
    def __init__(self, session: AsyncSession, sample_keeper: SampleKeeper | None = None) -> None:
        self.session = session
        self.sample_keeper = sample_keeper or SampleKeeper()
        self._trimmed = False  # this transaction trimmed the sample (not committed yet)

    # --- records ---------------------------------------------------------------------

    async def find_existing(self, keys: Sequence[SourceKey]) -> dict[SourceKey, SourceRecord]:
        if not keys:
            return {}
        rows = await self.session.execute(
            _FIND_EXISTING,
            {
                "regions": [r.value for r, _, _ in keys],
                "systems": [s for _, s, _ in keys],
                "ids": [i for _, _, i in keys],
            },
        )
        found = {}
        for row in rows:
            record = _record(row)
            found[(record.region, record.source_system, record.source_record_id)] = record
        return found

    async def add_records(self, records: Sequence[SourceRecord], links: Sequence[EntityLink]) -> None:
        columns = _COPY_COLUMNS_WITH_JOB if any(r.job for r in records) else _COPY_COLUMNS
        rows = (_record_row(r, link) for r, link in zip(records, links, strict=True))
        values = [tuple(row[c] for c in columns) for row in rows]
        await self.copy_rows("source_records", columns, values)
        await self._keep_sample([r.id for r in records if r.features is not None])

    async def _keep_sample(self, person_ids: list[str]) -> None:
        """Records just stored, offered to the person sample in the same transaction."""
        keeper = self.sample_keeper
        keys = sample.draw_keys(len(person_ids))
        entering = [(i, k) for i, k in zip(person_ids, keys, strict=True) if k < keeper.threshold]
        if not entering:
            return
        driver = await session_driver(self.session)
        row = await driver.fetchrow(_SAMPLE_ADD, [i for i, _ in entering], [k for _, k in entering])
        if not self._trimmed:  # the committed threshold: an add does not change it, a trim does
            keeper.threshold = float(row["threshold"])
        if sample.over_bound(int(row["size"]), keeper.cap):
            await self.session.execute(_SAMPLE_TRIM, {"cap": keeper.cap})
            self._trimmed = True

    async def copy_rows(self, table: str, columns: list[str], values: list[tuple[Any, ...]]) -> None:
        """COPY rows in, inside the unit of work's transaction (bulk ingest's fast path)."""
        if not values:
            return
        await (await session_driver(self.session)).copy_records_to_table(
            table, records=values, columns=columns
        )

    async def update_record(self, record: SourceRecord) -> None:
        await self.session.execute(
            update(source_records)
            .where(source_records.c.id == record.id)
            .values(
                source_evaluation=record.grading.source_evaluation,
                assessment=record.grading.assessment,
                handling=record.grading.handling.value,
                handling_conditions=record.grading.conditions,
                content=content_to_json(record.content),
                identifiers=_ids_json(record.identifiers),
                features=record.features,
                content_hash=record.content_hash,
            )
        )
        # The sample holds the record's features as they are now (or, if it has none, not it).
        sampled = person_sample.c.record_id == record.id
        if record.features is None:
            await self.session.execute(person_sample.delete().where(sampled))
        else:
            await self.session.execute(update(person_sample).where(sampled).values(features=record.features))

    async def get_records(self, ids: Iterable[str]) -> dict[str, SourceRecord]:
        wanted = list(set(ids))
        if not wanted:
            return {}
        rows = await self.session.execute(select(*_RECORD_COLUMNS).where(source_records.c.id.in_(wanted)))
        return {row.id: _record(row) for row in rows}

    async def records_of(self, entity_ids: Iterable[str]) -> list[SourceRecord]:
        wanted = list(set(entity_ids))
        if not wanted:
            return []
        rows = await self.session.execute(
            select(*_RECORD_COLUMNS)
            .where(source_records.c.entity_id.in_(wanted))
            .order_by(source_records.c.ingested_at, source_records.c.id)
        )
        return [_record(row) for row in rows]

    async def links_of(self, record_ids: Iterable[str]) -> dict[str, EntityLink]:
        wanted = list(set(record_ids))
        if not wanted:
            return {}
        rows = await self.session.execute(
            select(
                source_records.c.id,
                source_records.c.link_method,
                source_records.c.link_probability,
                source_records.c.linked_by,
                source_records.c.linked_at,
                source_records.c.link_explanation,
            ).where(source_records.c.id.in_(wanted))
        )
        return {r.id: _link(r) for r in rows}

    async def records_for_view(
        self, entity_ids: Iterable[str]
    ) -> tuple[list[SourceRecord], dict[str, EntityLink]]:
        """records_of's records without their comparison features, and links_of's links of
        them, in one statement: what an entity read needs of them."""
        wanted = list(set(entity_ids))
        if not wanted:
            return [], {}
        rows = (
            await self.session.execute(
                select(*_VIEW_COLUMNS)
                .where(source_records.c.entity_id.in_(wanted))
                .order_by(source_records.c.ingested_at, source_records.c.id)
            )
        ).all()
        return [_record(row, features=False) for row in rows], {row.id: _link(row) for row in rows}

    async def regions_of(self, entity_ids: Iterable[str]) -> dict[str, set[Region]]:
        wanted = list(set(entity_ids))
        found: dict[str, set[Region]] = defaultdict(set)
        if not wanted:
            return found
        rows = await self.session.execute(_REGIONS_OF, {"ids": wanted})
        for row in rows:
            found[row.entity_id].add(Region(row.region))
        return found

    async def features_of(self, record_ids: Iterable[str]) -> dict[str, Features]:
        wanted = list(set(record_ids))
        if not wanted:
            return {}
        rows = await self.session.execute(
            select(source_records.c.id, source_records.c.features).where(
                source_records.c.id.in_(wanted), source_records.c.features.is_not(None)
            )
        )
        return {row.id: row.features for row in rows}

    # --- keys ------------------------------------------------------------------------

    async def add_keys(self, rows: Sequence[tuple[str, str]], *, fresh: bool = False) -> None:
        """Index keys; `fresh` when every record is new (no conflict possible): COPY."""
        if fresh:
            await self.copy_rows("record_keys", ["key", "record_id"], list(rows))
            return
        # Two array parameters instead of a VALUES list: one small statement, planned once.
        for start in range(0, len(rows), 20_000):
            part = rows[start : start + 20_000]
            await self.session.execute(
                _ADD_KEYS, {"keys": [k for k, _ in part], "records": [r for _, r in part]}
            )

    async def replace_keys(self, record_id: str, old: Sequence[str], new: Sequence[str]) -> None:
        await self.session.execute(
            record_keys.delete().where(record_keys.c.key.in_(list(old)), record_keys.c.record_id == record_id)
        )
        await self.add_keys([(k, record_id) for k in new])

    async def hits(self, keys: Sequence[str]) -> list[KeyHit]:
        if not keys:
            return []
        rows = await self.session.execute(
            select(
                record_keys.c.key,
                source_records.c.id,
                source_records.c.entity_id,
                source_records.c.record_type,
                source_records.c.region,
            )
            .join(source_records, source_records.c.id == record_keys.c.record_id)
            .where(record_keys.c.key.in_(list(keys)))
        )
        return [KeyHit(r.key, r.id, r.entity_id, RecordType(r.record_type), Region(r.region)) for r in rows]

    async def candidates(self, keys: Sequence[str], per_key: int) -> list[tuple[str, Candidate]]:
        if not keys:
            return []
        driver = await session_driver(self.session)
        return _by_key(await driver.fetch(_ALL_CANDIDATES, list(keys), per_key))

    async def candidates_with(
        self, keys: Sequence[str], per_key: int, present: Sequence[str]
    ) -> list[tuple[str, Candidate]]:
        """As `candidates`, keeping only records with a value in one of the feature columns
        `present` (filtered by the database: re-resolution's pairs that can score differently)."""
        if not keys:
            return []
        wanted = [c for c in present if c in FEATURE_COLUMNS]
        if not wanted:
            return await self.candidates(keys, per_key)
        having = " OR ".join(f"jsonb_typeof(r.features -> '{c}') <> 'null'" for c in wanted)
        rows = await self.session.execute(
            text(_CANDIDATES.format(where=f"WHERE {having}")), {"keys": list(keys), "per_key": per_key}
        )
        return _by_key(rows)

    # --- entities --------------------------------------------------------------------

    async def add_entities(self, items: Sequence[Entity]) -> None:
        """New entities (a bulk ingest makes thousands at once: COPY)."""
        rows = [
            (e.id, e.entity_type.value, e.state.value, e.merged_into, e.created_at, e.updated_at)
            for e in items
        ]
        await self.copy_rows("entities", _ENTITY_COLUMNS, rows)

    async def get_entity(self, entity_id: str) -> Entity | None:
        row = (await self.session.execute(select(entities).where(entities.c.id == entity_id))).first()
        if row is None:
            return None
        return Entity(
            row.id,
            RecordType(row.entity_type),
            row.created_at,
            row.updated_at,
            EntityState(row.state),
            row.merged_into,
        )

    async def touch_entities(self, ids: Iterable[str], at: datetime) -> None:
        wanted = sorted(set(ids))
        if wanted:
            await self.session.execute(
                update(entities).where(entities.c.id.in_(wanted)).values(updated_at=at)
            )

    async def move_records(
        self, from_entity: str, to_entity: str, record_ids: Sequence[str] | None
    ) -> list[str]:
        statement = update(source_records).where(source_records.c.entity_id == from_entity)
        if record_ids is not None:
            statement = statement.where(source_records.c.id.in_(list(record_ids)))
        rows = await self.session.execute(
            statement.values(entity_id=to_entity).returning(source_records.c.id)
        )
        return sorted(r.id for r in rows)

    async def set_merged(self, entity_id: str, into: str | None, at: datetime) -> None:
        await self.session.execute(
            update(entities)
            .where(entities.c.id == entity_id)
            .values(
                state=EntityState.MERGED.value if into else EntityState.ACTIVE.value,
                merged_into=into,
                updated_at=at,
            )
        )

    async def merged_ids(self, entity_id: str) -> list[str]:
        """Every id that redirects (directly or through others) to this entity."""
        rows = await self.session.execute(
            text(
                """
                WITH RECURSIVE chain(id) AS (
                    SELECT id FROM entities WHERE merged_into = :id
                    UNION
                    SELECT e.id FROM entities e JOIN chain c ON e.merged_into = c.id
                )
                SELECT id FROM chain ORDER BY id
                """
            ),
            {"id": entity_id},
        )
        return [r.id for r in rows]

    # --- history ---------------------------------------------------------------------

    async def add_change(self, change: EntityChange) -> None:
        await self.session.execute(
            insert(entity_changes).values(
                id=change.id,
                entity_id=change.entity_id,
                kind=change.kind.value,
                others=list(change.others),
                moves=[[m.record_id, m.from_entity, m.to_entity] for m in change.moves],
                decided_by=change.decided_by,
                reason=change.reason,
                at=change.at,
                undone_by=change.undone_by,
                undoes=change.undoes,
            )
        )

    async def get_change(self, change_id: str) -> EntityChange | None:
        row = (
            await self.session.execute(select(entity_changes).where(entity_changes.c.id == change_id))
        ).first()
        return _change(row) if row else None

    async def changes_of(self, entity_ids: Iterable[str]) -> list[EntityChange]:
        wanted = list(set(entity_ids))
        if not wanted:
            return []
        rows = await self.session.execute(
            select(entity_changes)
            .where(or_(entity_changes.c.entity_id.in_(wanted), entity_changes.c.others.overlap(wanted)))
            .order_by(entity_changes.c.at, entity_changes.c.id)
        )
        return [_change(r) for r in rows]

    async def mark_undone(self, change_id: str, by_change: str) -> None:
        await self.session.execute(
            update(entity_changes).where(entity_changes.c.id == change_id).values(undone_by=by_change)
        )

    # --- reviews and decisions ---------------------------------------------------------

    async def add_review_tasks(self, tasks: Sequence[ReviewTask]) -> None:
        if not tasks:
            return
        await self.session.execute(
            insert(review_tasks),
            [
                {
                    "id": t.id,
                    "region": t.region.value,
                    "record_id": t.record_id,
                    "candidate_record_id": t.candidate_record_id,
                    "state": t.state.value,
                    "explanation": t.explanation.to_json(),
                    "created_at": t.created_at,
                    "decided_by": t.decided_by,
                    "reason": t.reason,
                    "decided_at": t.decided_at,
                }
                for t in tasks
            ],
        )

    async def get_review_task(self, task_id: str, *, for_update: bool = False) -> ReviewTask | None:
        statement = select(review_tasks).where(review_tasks.c.id == task_id)
        if for_update:
            statement = statement.with_for_update()
        row = (await self.session.execute(statement)).first()
        return _task(row) if row else None

    async def save_review_task(self, task: ReviewTask) -> None:
        await self.session.execute(
            update(review_tasks)
            .where(review_tasks.c.id == task.id)
            .values(
                state=task.state.value,
                decided_by=task.decided_by,
                reason=task.reason,
                decided_at=task.decided_at,
            )
        )

    async def list_review_tasks(
        self,
        regions: frozenset[Region] | None,
        state: ReviewState,
        limit: int,
        after: tuple[datetime, str] | None,
        job: str = "",
    ) -> list[ReviewTask]:
        statement = select(review_tasks).where(review_tasks.c.state == state.value)
        if regions is not None:
            statement = statement.where(review_tasks.c.region.in_([r.value for r in regions]))
        if job:
            ra, rb = source_records.alias("ra"), source_records.alias("rb")
            statement = (
                statement.join(ra, ra.c.id == review_tasks.c.record_id)
                .join(rb, rb.c.id == review_tasks.c.candidate_record_id)
                .where(ra.c.job == job, rb.c.job == job)
            )
        if after is not None:
            statement = statement.where(tuple_(review_tasks.c.created_at, review_tasks.c.id) > tuple_(*after))
        rows = await self.session.execute(
            statement.order_by(review_tasks.c.created_at, review_tasks.c.id).limit(limit)
        )
        return [_task(r) for r in rows]

    async def open_review_pairs(self, record_ids: Iterable[str]) -> set[tuple[str, str]]:
        wanted = list(set(record_ids))
        if not wanted:
            return set()
        rows = await self.session.execute(
            select(review_tasks.c.record_id, review_tasks.c.candidate_record_id).where(
                review_tasks.c.state == ReviewState.OPEN.value,
                or_(review_tasks.c.record_id.in_(wanted), review_tasks.c.candidate_record_id.in_(wanted)),
            )
        )
        return {(r.record_id, r.candidate_record_id) for r in rows}

    async def supersede_reviews(self, pairs: Iterable[tuple[str, str]], at: datetime) -> None:
        for a, b in pairs:
            await self.session.execute(
                update(review_tasks)
                .where(
                    review_tasks.c.state == ReviewState.OPEN.value,
                    or_(
                        and_(review_tasks.c.record_id == a, review_tasks.c.candidate_record_id == b),
                        and_(review_tasks.c.record_id == b, review_tasks.c.candidate_record_id == a),
                    ),
                )
                .values(state=ReviewState.SUPERSEDED.value, decided_at=at, decided_by="system")
            )

    async def add_pair_decisions(self, decisions: Sequence[PairDecision]) -> None:
        if not decisions:
            return
        statement = pg_insert(pair_decisions)
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["record_a", "record_b"],
                set_={
                    "verdict": statement.excluded.verdict,
                    "decided_by": statement.excluded.decided_by,
                    "reason": statement.excluded.reason,
                    "at": statement.excluded.at,
                },
            ),
            [
                {
                    "record_a": d.record_a,
                    "record_b": d.record_b,
                    "verdict": d.verdict.value,
                    "decided_by": d.decided_by,
                    "reason": d.reason,
                    "at": d.at,
                }
                for d in decisions
            ],
        )

    async def different_pairs(self, record_ids: Iterable[str]) -> set[tuple[str, str]]:
        wanted = list(set(record_ids))
        if not wanted:
            return set()
        rows = await self.session.execute(
            select(pair_decisions.c.record_a, pair_decisions.c.record_b).where(
                pair_decisions.c.verdict == PairVerdict.DIFFERENT.value,
                or_(pair_decisions.c.record_a.in_(wanted), pair_decisions.c.record_b.in_(wanted)),
            )
        )
        return {(r.record_a, r.record_b) for r in rows}

    async def different_between(
        self, entities_a: Iterable[str], entities_b: Iterable[str]
    ) -> list[tuple[str, str]]:
        a, b = list(set(entities_a)), list(set(entities_b))
        if not a or not b:
            return []
        ra = source_records.alias("ra")
        rb = source_records.alias("rb")
        rows = await self.session.execute(
            select(pair_decisions.c.record_a, pair_decisions.c.record_b)
            .join(ra, ra.c.id == pair_decisions.c.record_a)
            .join(rb, rb.c.id == pair_decisions.c.record_b)
            .where(
                pair_decisions.c.verdict == PairVerdict.DIFFERENT.value,
                or_(
                    and_(ra.c.entity_id.in_(a), rb.c.entity_id.in_(b)),
                    and_(ra.c.entity_id.in_(b), rb.c.entity_id.in_(a)),
                ),
            )
            .limit(10)
        )
        return [(r.record_a, r.record_b) for r in rows]

    async def different_decisions(
        self, records_a: Iterable[str], records_b: Iterable[str]
    ) -> list[PairDecision]:
        a, b = sorted(set(records_a)), sorted(set(records_b))
        if not a or not b:
            return []
        d = pair_decisions.c
        rows = await self.session.execute(
            select(pair_decisions).where(
                d.verdict == PairVerdict.DIFFERENT.value,
                or_(and_(d.record_a.in_(a), d.record_b.in_(b)), and_(d.record_a.in_(b), d.record_b.in_(a))),
            )
        )
        return [
            PairDecision(r.record_a, r.record_b, PairVerdict(r.verdict), r.decided_by, r.reason, r.at)
            for r in rows
        ]

    async def remove_pair_decisions(self, pairs: Iterable[tuple[str, str]]) -> None:
        wanted = sorted(set(pairs))
        if wanted:
            await self.session.execute(
                pair_decisions.delete().where(
                    tuple_(pair_decisions.c.record_a, pair_decisions.c.record_b).in_(wanted)
                )
            )

    # --- deconfliction ----------------------------------------------------------------

    async def claim_deconfliction(self, entity_id: str, region: Region, other: Region) -> bool:
        row = (
            await self.session.execute(
                pg_insert(deconflictions)
                .values(entity_id=entity_id, region=region.value, other_region=other.value, at=func.now())
                .on_conflict_do_nothing()
                .returning(deconflictions.c.entity_id)
            )
        ).first()
        return row is not None

    # --- models ----------------------------------------------------------------------

    async def active_model(self) -> MatchModel | None:
        row = (
            await self.session.execute(
                select(match_models.c.params)
                .where(match_models.c.active.is_(True))
                .order_by(match_models.c.created_at.desc())
            )
        ).first()
        return MatchModel.from_json(row.params) if row else None

    async def save_model(self, model: MatchModel, at: datetime) -> None:
        """Make a model active by an operator's command (`train-model`): the one active before
        is kept, retired."""
        await self.session.execute(
            update(match_models).where(match_models.c.active.is_(True)).values(active=False, status="RETIRED")
        )
        statement = pg_insert(match_models).values(
            version=model.version, params=model.to_json(), created_at=at, active=True, status="ACTIVE"
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["version"],
                set_={"active": True, "status": "ACTIVE", "params": statement.excluded.params},
            )
        )

    async def save_model_outcome(
        self, model: MatchModel, at: datetime, *, activate: bool, checks: dict[str, Any], records_seen: int
    ) -> None:
        """Keep an estimated model with its checks: made active, or kept as rejected."""
        if activate:
            await self.session.execute(
                update(match_models)
                .where(match_models.c.active.is_(True))
                .values(active=False, status="RETIRED")
            )
        status = "ACTIVE" if activate else "REJECTED"
        statement = pg_insert(match_models).values(
            version=model.version,
            params=model.to_json(),
            created_at=at,
            active=activate,
            status=status,
            checks=checks,
            records_seen=records_seen,
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["version"],
                set_={"active": activate, "status": status, "checks": checks, "records_seen": records_seen},
            )
        )

    async def count_person_records(self) -> int:
        row = (
            await self.session.execute(
                select(func.count()).select_from(source_records).where(source_records.c.features.is_not(None))
            )
        ).scalar_one()
        return int(row)

    async def learning_state(self) -> dict[str, Any]:
        row = (
            await self.session.execute(select(learning_state).where(learning_state.c.name == "person"))
        ).first()
        if row is None:
            return {
                "records_at_estimate": 0,
                "estimated_at": None,
                "reresolve_model": "",
                "reresolve_cursor": "",
                "reresolve_scanned": 0,
                "reresolve_merged": 0,
                "reresolve_done": True,
                "reresolve_from": "",
                "reresolve_split": 0,
            }
        return dict(row._mapping)

    async def save_learning_state(self, values: dict[str, Any], at: datetime) -> None:
        values = {k: v for k, v in values.items() if k not in ("name", "updated_at")}
        statement = pg_insert(learning_state).values(name="person", updated_at=at, **values)
        await self.session.execute(
            statement.on_conflict_do_update(index_elements=["name"], set_={**values, "updated_at": at})
        )

    async def persons_after(self, cursor: str, limit: int) -> list[Candidate]:
        """Person records in id order after `cursor` (re-resolution's scan)."""
        rows = await self.session.execute(
            select(
                source_records.c.id,
                source_records.c.entity_id,
                source_records.c.region,
                source_records.c.features,
            )
            .where(source_records.c.id > cursor, source_records.c.features.is_not(None))
            .order_by(source_records.c.id)
            .limit(limit)
        )
        return [Candidate(r.id, r.entity_id, Region(r.region), r.features) for r in rows]

    async def model(self, version: str) -> MatchModel | None:
        """A stored model by version, active or not."""
        row = (
            await self.session.execute(select(match_models.c.params).where(match_models.c.version == version))
        ).first()
        return MatchModel.from_json(row.params) if row else None

    async def persons_to_reresolve(
        self, cursor: str, limit: int, present: Sequence[str] | None
    ) -> list[tuple[Candidate, str]]:
        """Person records in id order after `cursor` with their link method; with `present`,
        only those with a value in at least one of those feature columns (the database picks
        them: records whose pairs cannot score differently never reach Python)."""
        statement = select(
            source_records.c.id,
            source_records.c.entity_id,
            source_records.c.region,
            source_records.c.features,
            source_records.c.link_method,
        ).where(source_records.c.id > cursor, source_records.c.features.is_not(None))
        if present is not None:
            statement = statement.where(
                or_(*(func.jsonb_typeof(source_records.c.features[c]) != "null" for c in present))
            )
        rows = await self.session.execute(statement.order_by(source_records.c.id).limit(limit))
        return [(Candidate(r.id, r.entity_id, Region(r.region), r.features), r.link_method) for r in rows]

    async def members(self, entity_ids: Iterable[str]) -> list[tuple[Candidate, str]]:
        """Every person record of these entities, with its link method."""
        wanted = sorted(set(entity_ids))
        if not wanted:
            return []
        rows = await self.session.execute(
            select(
                source_records.c.id,
                source_records.c.entity_id,
                source_records.c.region,
                source_records.c.features,
                source_records.c.link_method,
            ).where(source_records.c.entity_id.in_(wanted), source_records.c.features.is_not(None))
        )
        return [(Candidate(r.id, r.entity_id, Region(r.region), r.features), r.link_method) for r in rows]

    async def confirmed_records(self, records: Sequence[tuple[str, str]]) -> set[str]:
        """Of these (record, entity) pairs, the records a person put where they are: in a pair
        a reviewer confirmed, moved by a merge someone decided (not the resolver, not a model)
        or by someone's undoing of a split, or in an entity that survived such a merge."""
        wanted = sorted({r for r, _ in records})
        if not wanted:
            return set()
        confirmed: set[str] = set()
        rows = await self.session.execute(
            select(pair_decisions.c.record_a, pair_decisions.c.record_b).where(
                pair_decisions.c.verdict == PairVerdict.SAME.value,
                or_(pair_decisions.c.record_a.in_(wanted), pair_decisions.c.record_b.in_(wanted)),
            )
        )
        for r in rows:
            confirmed.update((r.record_a, r.record_b))
        rows = await self.session.execute(
            text(
                """
                SELECT c.entity_id, c.moves
                FROM entity_changes c
                WHERE c.kind IN ('MERGED', 'SPLIT_UNDONE') AND c.undone_by IS NULL
                  AND c.decided_by NOT LIKE 'system:%' AND c.decided_by NOT LIKE 'model:%'
                  AND (c.entity_id = ANY(:entities) OR c.moves @? CAST(:path AS jsonpath))
                """
            ),
            {
                "entities": sorted({e for _, e in records}),
                "path": "$[*][0] ? (" + " || ".join(f'@ == "{r}"' for r in wanted) + ")",
            },
        )
        survivors: set[str] = set()
        for r in rows:
            survivors.add(r.entity_id)
            confirmed.update(m[0] for m in r.moves)
        confirmed.update(r for r, e in records if e in survivors)
        return confirmed & set(wanted)

    async def reviewer_pairs(self, limit: int) -> list[tuple[str, Features, Features]]:
        """Reviewers' decisions on pairs of person records: (verdict, features, features)."""
        ra = source_records.alias("ra")
        rb = source_records.alias("rb")
        rows = await self.session.execute(
            select(pair_decisions.c.verdict, ra.c.features.label("fa"), rb.c.features.label("fb"))
            .join(ra, ra.c.id == pair_decisions.c.record_a)
            .join(rb, rb.c.id == pair_decisions.c.record_b)
            .where(
                ra.c.features.is_not(None),
                rb.c.features.is_not(None),
                pair_decisions.c.decided_by.not_like("system:%"),
            )
            .limit(limit)
        )
        return [(r.verdict, r.fa, r.fb) for r in rows]

    async def person_features_sample(self, limit: int) -> list[tuple[str, Features]]:
        """At most `limit` records of the person sample (domain/sample.py)."""
        rows = await self.session.execute(
            select(person_sample.c.record_id, person_sample.c.features)
            .order_by(person_sample.c.sample_key)
            .limit(limit)
        )
        return [(r.record_id, r.features) for r in rows]

    # --- job subjects -----------------------------------------------------------------

    async def add_job_subject(self, job: str, entity_id: str, region: Region, at: datetime) -> bool:
        row = (
            await self.session.execute(
                pg_insert(job_subjects)
                .values(job=job, entity_id=entity_id, region=region.value, at=at)
                .on_conflict_do_nothing()
                .returning(job_subjects.c.job)
            )
        ).first()
        return row is not None

    async def is_job_subject(self, job: str, region: Region, entity_ids: Sequence[str]) -> bool:
        if not entity_ids:
            return False
        row = (
            await self.session.execute(
                select(job_subjects.c.entity_id)
                .where(
                    job_subjects.c.job == job,
                    job_subjects.c.region == region.value,
                    job_subjects.c.entity_id.in_(list(entity_ids)),
                )
                .limit(1)
            )
        ).first()
        return row is not None
