"""The identity log on PostgreSQL: identity changes applied and the aliases they left, per region."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from sqlalchemy import String, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from toex_kernel.regions import Region

from toex_safeguarding.adapters.tables import identity_changes, subject_aliases
from toex_safeguarding.domain.identity import IdentityChange


def _detail(change: IdentityChange) -> dict[str, Any]:
    return {
        "rekeyed": [list(r) for r in change.rekeyed],
        "absorbed": [list(a) for a in change.absorbed],
        "linked": list(change.linked),
    }


def _change(row: Any) -> IdentityChange:
    detail = row.detail or {}
    return IdentityChange(
        key=row.change_key,
        kind=row.kind,
        entity=row.entity,
        undoes=row.undoes,
        undone_by=row.undone_by,
        at=row.applied_at,
        rekeyed=[(a, b, c) for a, b, c in detail.get("rekeyed", [])],
        absorbed=[(a, b) for a, b in detail.get("absorbed", [])],
        linked=list(detail.get("linked", [])),
    )


_a = subject_aliases.c
# Built once (their parameters bound by name): a trigger resolves its subject on every event.
_ALIAS = select(_a.subject).where(_a.region == bindparam("region"), _a.alias == bindparam("alias"))
_ALIASES = select(_a.alias, _a.subject).where(
    _a.region == bindparam("region"), _a.alias == any_(bindparam("aliases", type_=ARRAY(String)))
)


class SqlIdentityLog:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        # What `aliases` found each alias stands for (None: itself), answered again without a
        # round trip in this unit of work; kept right by this log's own alias changes.
        self._found: dict[tuple[Region, str], str | None] = {}

    async def claim(self, region: Region, change: IdentityChange) -> bool:
        # A concurrent claim of the same key waits for the first to commit, then finds it.
        claimed = await self.session.execute(
            pg_insert(identity_changes)
            .values(
                region=region.value,
                change_key=change.key,
                kind=change.kind,
                entity=change.entity,
                undoes=change.undoes,
                undone_by=change.undone_by,
                detail=_detail(change),
                applied_at=change.at,
            )
            .on_conflict_do_nothing()
            .returning(identity_changes.c.change_key)
        )
        return claimed.first() is not None

    async def get(self, region: Region, key: str) -> IdentityChange | None:
        c = identity_changes.c
        row = (
            await self.session.execute(
                select(identity_changes)
                .where(c.region == region.value, c.change_key == key)
                .with_for_update()
            )
        ).first()
        return None if row is None else _change(row)

    async def save(self, region: Region, change: IdentityChange) -> None:
        c = identity_changes.c
        await self.session.execute(
            update(identity_changes)
            .where(c.region == region.value, c.change_key == change.key)
            .values(undone_by=change.undone_by, detail=_detail(change))
        )

    async def undoer_of(self, region: Region, key: str) -> str | None:
        c = identity_changes.c
        found = await self.session.execute(
            select(c.change_key)
            .where(c.region == region.value, c.undoes == key)
            .order_by(c.applied_at)
            .limit(1)
        )
        return found.scalar_one_or_none()

    async def alias(self, region: Region, alias: str) -> str | None:
        if (region, alias) in self._found:
            return self._found[region, alias]
        found = await self.session.execute(_ALIAS, {"region": region.value, "alias": alias})
        return found.scalar_one_or_none()

    async def aliases(self, region: Region, aliases: Collection[str]) -> dict[str, str]:
        wanted = [a for a in dict.fromkeys(aliases) if (region, a) not in self._found]
        if wanted:
            rows = await self.session.execute(_ALIASES, {"region": region.value, "aliases": wanted})
            found = {row.alias: row.subject for row in rows}
            for alias in wanted:
                self._found[region, alias] = found.get(alias)
        return {a: s for a in aliases if (s := self._found.get((region, a))) is not None}

    async def add_alias(self, region: Region, alias: str, subject: str, change: str) -> None:
        statement = pg_insert(subject_aliases).values(
            region=region.value, alias=alias, subject=subject, change_key=change, created_at=func.now()
        )
        await self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["region", "alias"],
                set_={"subject": statement.excluded.subject, "change_key": statement.excluded.change_key},
            )
        )
        self._found[region, alias] = subject

    async def drop_aliases(self, region: Region, change: str) -> None:
        a = subject_aliases.c
        await self.session.execute(
            delete(subject_aliases).where(a.region == region.value, a.change_key == change)
        )
        # Which aliases the change had left is not known here: the region's are looked up again.
        self._found = {key: value for key, value in self._found.items() if key[0] is not region}
