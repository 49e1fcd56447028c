"""The inbox read model on PostgreSQL (tables `inbox_items` and `inbox_reads`), as prepared
statements on the unit of work's asyncpg connection, like the job repository.

Every read is narrowed to the reader's Audience in SQL: the items addressed to them by name, and
those addressed to the roles they hold, of the regions they may see.

WatchInbox's order is (txid, seq): the id of the transaction that stored an item, then a
sequence. A watch reads only items of transactions older than the oldest one still running
(`pg_snapshot_xmin`): those are all committed or gone, and no later item can take a place
before them, so a watch that has passed a place never misses an item committed late.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from toex_common.uow import DriverUnitOfWork
from toex_kernel.regions import Region

from toex_tasking.domain.inbox import (
    Audience,
    Cursor,
    InboxFilter,
    InboxItem,
    ItemType,
    Recipient,
    Source,
)
from toex_tasking.domain.model import Handling

# The largest sequence number: a cursor at (txid, LAST) is past everything that transaction stored.
LAST = 2**63 - 1

_INSERT = (
    "INSERT INTO inbox_items (id, recipient, event_id, event_type, item_type, summary, resource, "
    "region, handling, occurred_at, delivered_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING"
)
_SELECT = """
SELECT i.id, i.recipient, i.event_id, i.event_type, i.item_type, i.summary, i.resource, i.region,
       i.handling, i.occurred_at, i.delivered_at, i.txid, i.seq, r.read_at
FROM inbox_items i LEFT JOIN inbox_reads r ON r.item_id = i.id AND r.username = $1"""
_EXISTING = "SELECT id FROM inbox_items WHERE id = ANY($1::text[])"
_MARK_READ = """
INSERT INTO inbox_reads (username, item_id, read_at)
SELECT $1::text, id, $3::timestamptz FROM inbox_items WHERE id = ANY($2::text[])
ON CONFLICT DO NOTHING RETURNING item_id"""
# Every transaction older than this has ended: what it stored is there for good.
_HORIZON = "SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint AS xmin"


def _item(row: Mapping[str, Any]) -> InboxItem:
    return InboxItem(
        id=row["id"],
        recipient=Recipient.parse(row["recipient"]),
        item_type=ItemType(row["item_type"]),
        summary=row["summary"],
        resource=row["resource"],
        source=Source(
            event_id=row["event_id"],
            event_type=row["event_type"],
            occurred_at=row["occurred_at"],
            region=Region(row["region"]),
            handling=Handling(row["handling"]),
        ),
        delivered_at=row["delivered_at"],
        read_at=row["read_at"],
        cursor=Cursor(row["txid"], row["seq"]),
    )


class _Query:
    """A statement's conditions and numbered arguments ($1 is always the reader's username)."""

    def __init__(self, audience: Audience) -> None:
        self.args: list[Any] = [audience.username]
        self.conditions: list[str] = []
        mine = self.arg(Recipient.user(audience.username).key)
        roles = f"i.recipient = ANY({self.arg(audience.keys)}::text[])"
        if audience.regions is not None:
            roles += f" AND i.region = ANY({self.arg(sorted(r.value for r in audience.regions))}::text[])"
        self.conditions.append(f"(i.recipient = {mine} OR ({roles}))")

    def arg(self, value: Any) -> str:
        self.args.append(value)
        return f"${len(self.args)}"

    def keep(self, keep: InboxFilter) -> _Query:
        if keep.read is not None:
            self.conditions.append(f"r.item_id IS {'NOT ' if keep.read else ''}NULL")
        if keep.types is not None:
            self.conditions.append(
                f"i.item_type = ANY({self.arg(sorted(t.value for t in keep.types))}::text[])"
            )
        return self

    def where(self, condition: str) -> _Query:
        self.conditions.append(condition)
        return self

    @property
    def sql(self) -> str:
        return " WHERE " + " AND ".join(self.conditions)


class PgInboxRepository:
    def __init__(self, uow: DriverUnitOfWork) -> None:
        self.uow = uow

    async def add(self, items: list[InboxItem]) -> None:
        self.uow.write_many(
            _INSERT,
            [
                (
                    item.id,
                    item.recipient.key,
                    item.source.event_id,
                    item.source.event_type,
                    item.item_type.value,
                    item.summary,
                    item.resource,
                    item.source.region.value,
                    item.source.handling.value,
                    item.source.occurred_at,
                    item.delivered_at,
                )
                for item in items
            ],
        )

    async def _fetch(self, sql: str, args: list[Any]) -> list[Any]:
        conn = await self.uow.connection()
        return list(await conn.fetch(sql, *args))

    async def search(
        self, audience: Audience, keep: InboxFilter, limit: int, after: tuple[datetime, str] | None
    ) -> list[InboxItem]:
        query = _Query(audience).keep(keep)
        if after is not None:
            query.where(f"(i.occurred_at, i.id) < ({query.arg(after[0])}, {query.arg(after[1])})")
        order = f" ORDER BY i.occurred_at DESC, i.id DESC LIMIT {query.arg(limit)}"
        return [_item(row) for row in await self._fetch(_SELECT + query.sql + order, query.args)]

    async def visible(self, audience: Audience, item_ids: list[str]) -> set[str]:
        query = _Query(audience)
        query.where(f"i.id = ANY({query.arg(item_ids)}::text[])")
        rows = await self._fetch(_SELECT + query.sql, query.args)
        return {row["id"] for row in rows}

    async def existing(self, item_ids: list[str]) -> set[str]:
        return {row["id"] for row in await self._fetch(_EXISTING, [item_ids])}

    async def mark_read(self, username: str, item_ids: list[str], now: datetime) -> int:
        return len(await self._fetch(_MARK_READ, [username, item_ids, now]))

    async def mark_matching_read(self, audience: Audience, keep: InboxFilter, now: datetime) -> int:
        query = _Query(audience).keep(keep).where("r.item_id IS NULL")
        sql = (
            f"INSERT INTO inbox_reads (username, item_id, read_at) "
            f"SELECT $1::text, i.id, {query.arg(now)}::timestamptz "
            "FROM inbox_items i LEFT JOIN inbox_reads r ON r.item_id = i.id AND r.username = $1"
            f"{query.sql} ON CONFLICT DO NOTHING RETURNING item_id"
        )
        return len(await self._fetch(sql, query.args))

    async def cursor_of(self, audience: Audience, item_id: str) -> Cursor | None:
        query = _Query(audience)
        query.where(f"i.id = {query.arg(item_id)}")
        rows = await self._fetch(_SELECT + query.sql, query.args)
        return _item(rows[0]).cursor if rows else None

    async def _xmin(self) -> int:
        conn = await self.uow.connection()
        return int(await conn.fetchval(_HORIZON))

    async def horizon(self) -> Cursor:
        return Cursor(await self._xmin() - 1, LAST)

    async def arrived_after(
        self, audience: Audience, keep: InboxFilter, cursor: Cursor, limit: int
    ) -> tuple[list[InboxItem], Cursor]:
        # Taken before the items are read: what is older than it then is older than it after.
        xmin = await self._xmin()
        query = _Query(audience).keep(keep)
        query.where(f"(i.txid, i.seq) > ({query.arg(cursor.txid)}, {query.arg(cursor.seq)})")
        query.where(f"i.txid < {query.arg(xmin)}")
        order = f" ORDER BY i.txid, i.seq LIMIT {query.arg(limit)}"
        items = [_item(row) for row in await self._fetch(_SELECT + query.sql + order, query.args)]
        if len(items) == limit:
            last = items[-1].cursor
            assert last is not None
            return items, last
        # Everything of the reader's older than the horizon has been read: continue from there,
        # so the next look does not go over other readers' items again.
        return items, max(cursor, Cursor(xmin - 1, LAST))
