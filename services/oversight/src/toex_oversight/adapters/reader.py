"""The overview's reads: the counters summed over the period's buckets, the open deadlines of the
period's work as due or overdue now, the newest reconciliations and the events counted, in one
read-only snapshot (so the parts agree with each other)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

import asyncpg
from sqlalchemy.ext.asyncio import AsyncEngine
from toex_common.db import driver_connection
from toex_kernel.regions import Region

from toex_oversight.domain.model import DeadlineKind, Figure, Reconciliation
from toex_oversight.domain.overview import Grain, OverviewQuery, Span, Tallies, sum_counts

# Three spans at most (the days of a first and a last month, the months between): an unused one
# is an empty range.
_SPANS = (
    "((grain = $1 AND bucket BETWEEN $2 AND $3) OR (grain = $4 AND bucket BETWEEN $5 AND $6) "
    "OR (grain = $7 AND bucket BETWEEN $8 AND $9))"
)
_COUNTS = (
    "SELECT region, figure, value, sum(n)::bigint FROM counts WHERE "
    + _SPANS
    + " AND (region = ANY($10::text[]) OR (figure = $11 AND value = ANY($10::text[])))"
    " GROUP BY region, figure, value"
)
# With a requesting force: its jobs only.
_FORCE_COUNTS = (
    "SELECT region, figure, value, sum(n)::bigint FROM counts WHERE "
    + _SPANS
    + " AND (region = ANY($10::text[]) OR (figure = $11 AND value = ANY($10::text[])))"
    " AND force = $12 AND figure LIKE 'jobs.%' GROUP BY region, figure, value"
)
_WITHOUT_FORCE = (
    "SELECT coalesce(sum(n), 0)::bigint FROM counts WHERE "
    + _SPANS
    + " AND region = ANY($10::text[]) AND force = '' AND figure = $11"
)
_DEADLINES = (
    "SELECT region, kind, count(*) FILTER (WHERE due_at >= $4), count(*) FILTER (WHERE due_at < $4) "
    "FROM deadlines WHERE cohort BETWEEN $1 AND $2 AND region = ANY($3::text[]) "
    "AND ($5 = '' OR (kind = 'job' AND force = $5)) GROUP BY region, kind"
)
_RECONCILIATIONS = (
    "SELECT region, completed_at, reconciliation, local_records, in_sync, held, stale, missing, "
    "rejected, conflict FROM reconciliations WHERE region = ANY($1::text[])"
)
_ACTIVITY = (
    "SELECT region, sum(events)::bigint AS events, max(latest_event_at) AS latest_event_at FROM activity "
    "WHERE region = ANY($1::text[]) GROUP BY region"
)
_FIRST_COUNTED = "SELECT min(bucket) FROM counts WHERE grain = 'D'"


def span_parameters(spans: Sequence[Span]) -> list[Any]:
    """$1..$9 of `_SPANS`: three (grain, first, last), unused ones empty."""
    padded = [*spans, *[Span(Grain.DAY, date(2, 1, 1), date(1, 1, 1))] * (3 - len(spans))]
    return [value for span in padded for value in (span.grain.value, span.first, span.last)]


class PgOverviewReader:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def tallies(self, query: OverviewQuery) -> Tallies:
        regions = [r.value for r in query.regions]
        spans = span_parameters(query.period.spans)
        async with driver_connection(self._engine) as conn:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await self._read(conn, query, regions, spans)

    async def _read(
        self, conn: asyncpg.Connection, query: OverviewQuery, regions: list[str], spans: list[Any]
    ) -> Tallies:
        taken_by = Figure.JOB_TAKEN_BY.value
        if query.force:
            rows = await conn.fetch(_FORCE_COUNTS, *spans, regions, taken_by, query.force)
            without = await conn.fetchval(_WITHOUT_FORCE, *spans, regions, Figure.JOB_STATE.value)
        else:
            rows = await conn.fetch(_COUNTS, *spans, regions, taken_by)
            without = 0
        deadlines = {
            (row[0], row[1]): (int(row[2]), int(row[3]))
            for row in await conn.fetch(
                _DEADLINES, query.period.first, query.period.last, regions, query.now, query.force
            )
            if not query.force or row[1] == DeadlineKind.JOB.value
        }
        reconciliations = {}
        if not query.force:
            reconciliations = {
                row["region"]: Reconciliation(
                    region=Region(row["region"]),
                    completed_at=row["completed_at"],
                    name=row["reconciliation"],
                    local_records=row["local_records"],
                    in_sync=row["in_sync"],
                    held=row["held"],
                    stale=row["stale"],
                    missing=row["missing"],
                    rejected=row["rejected"],
                    conflict=row["conflict"],
                )
                for row in await conn.fetch(_RECONCILIATIONS, regions)
            }
        activity = {
            row["region"]: (int(row["events"]), row["latest_event_at"])
            for row in await conn.fetch(_ACTIVITY, regions)
        }
        first_counted = await conn.fetchval(_FIRST_COUNTED) if query.open_start else None
        return Tallies(
            counts=sum_counts([(r[0], r[1], r[2], int(r[3])) for r in rows]),
            deadlines=deadlines,
            reconciliations=reconciliations,
            activity=activity,
            jobs_without_force=int(without or 0),
            first_counted=first_counted,
        )
