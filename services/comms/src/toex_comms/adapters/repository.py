"""SQLAlchemy Core repository of the comms service. Never commits: the unit of work does."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from toex_common.grants import grant_of_row, with_grant
from toex_kernel.grants import JobGrant
from toex_kernel.regions import Region

from toex_comms.adapters import tables as t
from toex_comms.domain.identity import AttributionMove, ChangeKind, IdentityChange, Outcome
from toex_comms.domain.model import (
    AdvertFlag,
    Attribution,
    Dataset,
    DatasetKind,
    Handling,
    KnownJob,
    Watchlist,
    WatchlistContact,
    WatchlistKind,
    one_per_entity,
)
from toex_comms.domain.profiles import MappingProfile

# Advisory lock class of the settling of advert network ids ("ADNW").
ADVERT_NETWORK_LOCK = 0x41444E57


def _dataset(row: Any) -> Dataset:
    return Dataset(
        id=row.id,
        region=Region(row.region),
        kind=DatasetKind(row.kind),
        job=row.job,
        display_name=row.display_name,
        source_filename=row.source_filename,
        content_sha256=row.content_sha256,
        profile=row.profile,
        handling=Handling(row.handling),
        created_by=row.created_by,
        created_at=row.created_at,
        size_bytes=row.size_bytes,
        rows_read=row.rows_read,
        rows_accepted=row.rows_accepted,
        rows_rejected=row.rows_rejected,
        distinct_identifiers=row.distinct_identifiers,
        first_time=row.first_time,
        last_time=row.last_time,
    )


def _contact(row: Any) -> WatchlistContact:
    return WatchlistContact(
        id=row.id,
        region=Region(row.region),
        dataset_id=row.dataset_id,
        list_a=row.list_a,
        kind_a=WatchlistKind(row.kind_a),
        number_a=row.number_a,
        list_b=row.list_b,
        kind_b=WatchlistKind(row.kind_b),
        number_b=row.number_b,
        first=row.first_time,
        last=row.last_time,
        contacts=row.contacts,
        calls=row.calls,
        sms=row.sms,
        duration=row.duration,
        detected_at=row.detected_at,
    )


def _attribution(row: Any) -> Attribution:
    return Attribution(
        row.identifier,
        row.entity_id,
        row.label,
        row.source,
        row.recorded_by,
        row.recorded_at,
        row.record,
        row.via_change,
        row.review,
    )


def _attribution_values(region: Region, a: Attribution) -> dict[str, Any]:
    return {
        "region": region.value,
        "identifier": a.identifier,
        "entity_id": a.entity_id,
        "label": a.label,
        "source": a.source,
        "recorded_by": a.recorded_by,
        "recorded_at": a.recorded_at,
        "record": a.record,
        "via_change": a.via_change,
        "review": a.review,
    }


def _attribution_key(region: Region, key: tuple[str, str, str]) -> Any:
    c = t.attributions.c
    identifier, entity, record = key
    return and_(
        c.region == region.value, c.identifier == identifier, c.entity_id == entity, c.record == record
    )


def _change(row: Any) -> IdentityChange:
    return IdentityChange(
        change_id=row.change_id,
        kind=ChangeKind(row.kind),
        entity=row.entity,
        occurred_at=row.occurred_at,
        applied_at=row.applied_at,
        decided_by=row.decided_by,
        merged=tuple(row.merged),
        moved_records=tuple(row.moved_records),
        moved_to=tuple(row.moved_to),
        undoes=row.undoes,
        undone_by=row.undone_by,
    )


def _datasets_of(region: Region, job: str) -> Any:
    """The ids of the region's datasets attached to `job`, as a subquery."""
    d = t.datasets.c
    return select(d.id).where(d.region == region.value, d.job == job)


# Built once (SQLAlchemy keeps a statement's cache key): built per call, the select and its
# cache key cost about 20 us of CPU, with the grant joined 50 to 80 us.
_DATASET = select(t.datasets).where(t.datasets.c.id == bindparam("dataset_id"))
_DATASET_WITH_GRANT = with_grant(_DATASET, t.datasets, bindparam("job"))


class SqlCommsRepository:
    def __init__(self, session: AsyncSession, track: Callable[[Dataset], None] = lambda _: None) -> None:
        self.session = session
        # The unit of work's: a stored dataset's domain events are published at its commit.
        self._track = track

    # datasets
    async def add_dataset(self, d: Dataset) -> None:
        await self.session.execute(
            t.datasets.insert().values(
                id=d.id,
                region=d.region.value,
                kind=d.kind.value,
                job=d.job,
                display_name=d.display_name,
                source_filename=d.source_filename,
                content_sha256=d.content_sha256,
                profile=d.profile,
                handling=d.handling.value,
                created_by=d.created_by,
                created_at=d.created_at,
                size_bytes=d.size_bytes,
                rows_read=d.rows_read,
                rows_accepted=d.rows_accepted,
                rows_rejected=d.rows_rejected,
                distinct_identifiers=d.distinct_identifiers,
                first_time=d.first_time,
                last_time=d.last_time,
            )
        )
        self._track(d)

    async def get_dataset(self, dataset_id: str) -> Dataset | None:
        row = (await self.session.execute(_DATASET, {"dataset_id": dataset_id})).first()
        return _dataset(row) if row else None

    async def get_dataset_with_grant(
        self, dataset_id: str, job: str
    ) -> tuple[Dataset | None, JobGrant | None]:
        row = (
            await self.session.execute(_DATASET_WITH_GRANT, {"dataset_id": dataset_id, "job": job})
        ).first()
        if row is None:
            # No dataset, so no row to carry the grant: what is not there is refused before a
            # grant is asked about.
            return None, None
        return _dataset(row), grant_of_row(row, job)

    async def find_same_file(self, region: Region, job: str, kind: DatasetKind, sha: str) -> Dataset | None:
        c = t.datasets.c
        row = (
            await self.session.execute(
                select(t.datasets).where(
                    c.region == region.value, c.job == job, c.kind == kind.value, c.content_sha256 == sha
                )
            )
        ).first()
        return _dataset(row) if row else None

    async def list_datasets(
        self,
        regions: list[Region] | None,
        job: str,
        kind: DatasetKind | None,
        limit: int,
        after: tuple[datetime, str] | None = None,
    ) -> list[Dataset]:
        c = t.datasets.c
        query = select(t.datasets)
        if regions is not None:
            query = query.where(c.region.in_([r.value for r in regions]))
        if job:
            query = query.where(c.job == job)
        if kind is not None:
            query = query.where(c.kind == kind.value)
        if after is not None:
            query = query.where(tuple_(c.created_at, c.id) < tuple_(after[0], after[1]))
        query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        return [_dataset(r) for r in (await self.session.execute(query)).all()]

    # mapping profiles
    async def add_profile(self, region: Region, profile: MappingProfile, by: str, at: datetime) -> bool:
        body = {
            "columns": profile.columns,
            "time_format": profile.time_format,
            "time_zone": profile.time_zone,
            "event_types": profile.event_types,
            "separator": profile.separator,
            "default_country": profile.default_country,
        }
        result = await self.session.execute(
            pg_insert(t.mapping_profiles)
            .values(
                region=region.value,
                profile_id=profile.profile_id,
                kind=profile.kind.value,
                body=body,
                created_by=by,
                created_at=at,
            )
            .on_conflict_do_nothing()
            .returning(t.mapping_profiles.c.profile_id)
        )
        return result.first() is not None

    async def list_profiles(self, region: Region, kind: DatasetKind | None = None) -> list[MappingProfile]:
        c = t.mapping_profiles.c
        query = select(t.mapping_profiles).where(c.region == region.value)
        if kind is not None:
            query = query.where(c.kind == kind.value)
        rows = (await self.session.execute(query.order_by(c.profile_id))).all()
        return [MappingProfile(r.profile_id, **r.body, kind=DatasetKind(r.kind)) for r in rows]

    # watchlists
    async def add_watchlist(self, w: Watchlist) -> bool:
        result = await self.session.execute(
            pg_insert(t.watchlists)
            .values(
                region=w.region.value,
                watchlist_id=w.id,
                display_name=w.display_name,
                kind=w.kind.value,
                created_by=w.created_by,
                created_at=w.created_at,
            )
            .on_conflict_do_nothing()
            .returning(t.watchlists.c.watchlist_id)
        )
        return result.first() is not None

    async def list_watchlists(self, region: Region, watchlist_id: str = "") -> list[Watchlist]:
        query = select(t.watchlists).where(t.watchlists.c.region == region.value)
        if watchlist_id:
            query = query.where(t.watchlists.c.watchlist_id == watchlist_id)
        lists = {
            r.watchlist_id: Watchlist(
                Region(r.region),
                r.watchlist_id,
                r.display_name,
                WatchlistKind(r.kind),
                r.created_by,
                r.created_at,
            )
            for r in (await self.session.execute(query.order_by(t.watchlists.c.watchlist_id))).all()
        }
        if lists:
            n = t.watchlist_numbers.c
            rows = await self.session.execute(
                select(n.watchlist_id, n.number)
                .where(n.region == region.value, n.watchlist_id.in_(list(lists)))
                .order_by(n.number)
            )
            for wid, number in rows.all():
                lists[wid].numbers.append(number)
            a = t.watchlist_accounts.c
            rows = await self.session.execute(
                select(a.watchlist_id, a.account)
                .where(a.region == region.value, a.watchlist_id.in_(list(lists)))
                .order_by(a.account)
            )
            for wid, account in rows.all():
                lists[wid].accounts.append(account)
        return list(lists.values())

    # advert network ids
    async def lock_advert_networks(self, region: Region, job: str) -> None:
        """Held to the end of the transaction: one import at a time settles a job's network ids."""
        await self.session.execute(
            text("SELECT pg_advisory_xact_lock(:cls, hashtext(:key))"),
            {"cls": ADVERT_NETWORK_LOCK, "key": f"{region.value}|{job}"},
        )

    async def advert_network_ids(
        self, region: Region, job: str | None, advert_ids: Iterable[str]
    ) -> dict[str, str]:
        """advert id -> its stored network id, in `job` ("" for the region's own datasets; None:
        any of the region's, the smallest id where several)."""
        wanted = sorted(set(advert_ids))
        out: dict[str, str] = {}
        c = t.advert_network_members.c
        for start in range(0, len(wanted), 10_000):
            query = select(c.advert_id, func.min(c.network_id)).where(
                c.region == region.value, c.advert_id.in_(wanted[start : start + 10_000])
            )
            if job is not None:
                query = query.where(c.job == job)
            out.update({a: n for a, n in (await self.session.execute(query.group_by(c.advert_id))).all()})
        return out

    async def record_advert_networks(
        self, region: Region, job: str, members: dict[str, str], dataset: str, at: datetime
    ) -> None:
        """Store (or move, when networks joined) each advert's network id."""
        values = [
            {
                "region": region.value,
                "job": job,
                "advert_id": a,
                "network_id": n,
                "dataset": dataset,
                "recorded_at": at,
            }
            for a, n in members.items()
        ]
        for start in range(0, len(values), 5_000):
            stmt = pg_insert(t.advert_network_members).values(values[start : start + 5_000])
            await self.session.execute(
                stmt.on_conflict_do_update(
                    index_elements=["region", "job", "advert_id"],
                    set_={"network_id": stmt.excluded.network_id},
                    where=t.advert_network_members.c.network_id != stmt.excluded.network_id,
                )
            )

    async def add_accounts(self, region: Region, watchlist_id: str, accounts: Iterable[str]) -> None:
        values = [{"region": region.value, "watchlist_id": watchlist_id, "account": x} for x in accounts]
        if values:
            await self.session.execute(
                pg_insert(t.watchlist_accounts).values(values).on_conflict_do_nothing()
            )

    async def account_members(
        self, region: Region, accounts: Iterable[str] | None = None
    ) -> dict[str, list[str]]:
        """Account -> the region's lists holding it (only `accounts`, when given)."""
        query = select(t.watchlist_accounts.c.account, t.watchlist_accounts.c.watchlist_id).where(
            t.watchlist_accounts.c.region == region.value
        )
        if accounts is not None:
            wanted = sorted(set(accounts))
            if not wanted:
                return {}
            query = query.where(t.watchlist_accounts.c.account.in_(wanted))
        out: dict[str, list[str]] = {}
        for account, wid in (await self.session.execute(query)).all():
            out.setdefault(account, []).append(wid)
        return out

    async def add_numbers(self, region: Region, watchlist_id: str, numbers: Iterable[int]) -> None:
        values = [{"region": region.value, "watchlist_id": watchlist_id, "number": n} for n in numbers]
        if values:
            await self.session.execute(pg_insert(t.watchlist_numbers).values(values).on_conflict_do_nothing())

    async def members(self, region: Region) -> dict[int, list[tuple[str, WatchlistKind]]]:
        n, w = t.watchlist_numbers.c, t.watchlists.c
        rows = await self.session.execute(
            select(n.number, n.watchlist_id, w.kind)
            .join(t.watchlists, and_(w.region == n.region, w.watchlist_id == n.watchlist_id))
            .where(n.region == region.value)
        )
        out: dict[int, list[tuple[str, WatchlistKind]]] = {}
        for number, wid, kind in rows.all():
            out.setdefault(number, []).append((wid, WatchlistKind(kind)))
        return out

    async def add_contacts(self, contacts: list[WatchlistContact]) -> list[str]:
        """Store detections; return the ids of those not seen before."""
        if not contacts:
            return []
        result = await self.session.execute(
            pg_insert(t.watchlist_contacts)
            .values(
                [
                    {
                        "id": c.id,
                        "region": c.region.value,
                        "dataset_id": c.dataset_id,
                        "list_a": c.list_a,
                        "kind_a": c.kind_a.value,
                        "number_a": c.number_a,
                        "list_b": c.list_b,
                        "kind_b": c.kind_b.value,
                        "number_b": c.number_b,
                        "first_time": c.first,
                        "last_time": c.last,
                        "contacts": c.contacts,
                        "calls": c.calls,
                        "sms": c.sms,
                        "duration": c.duration,
                        "detected_at": c.detected_at,
                    }
                    for c in contacts
                ]
            )
            .on_conflict_do_nothing()
            .returning(t.watchlist_contacts.c.id)
        )
        return [r.id for r in result.all()]

    async def list_contacts(self, region: Region, limit: int, job: str = "") -> list[WatchlistContact]:
        c = t.watchlist_contacts.c
        query = select(t.watchlist_contacts).where(c.region == region.value)
        if job:
            query = query.where(c.dataset_id.in_(_datasets_of(region, job)))
        rows = await self.session.execute(query.order_by(c.detected_at.desc(), c.id).limit(limit))
        return [_contact(r) for r in rows.all()]

    # attributions
    async def attribute(self, region: Region, a: Attribution) -> None:
        values = _attribution_values(region, a)
        await self.session.execute(
            pg_insert(t.attributions)
            .values(values)
            .on_conflict_do_update(
                index_elements=["region", "identifier", "entity_id", "record"],
                set_={
                    "label": a.label,
                    "source": a.source,
                    "recorded_by": a.recorded_by,
                    "recorded_at": a.recorded_at,
                    "via_change": a.via_change,
                    "review": a.review,
                },
            )
        )

    async def attributions(self, region: Region, identifiers: Iterable[str]) -> dict[str, list[Attribution]]:
        wanted = list(set(identifiers))
        out: dict[str, list[Attribution]] = {}
        if not wanted:
            return out
        c = t.attributions.c
        for i in range(0, len(wanted), 5000):
            rows = await self.session.execute(
                select(t.attributions)
                .where(
                    or_(c.region == region.value, c.region == Region.NATIONAL.value),
                    c.identifier.in_(wanted[i : i + 5000]),
                )
                .order_by(c.recorded_at, c.record)
            )
            for r in rows.all():
                out.setdefault(r.identifier, []).append(_attribution(r))
        return {identifier: one_per_entity(found) for identifier, found in out.items()}

    async def attributions_of_entities(self, region: Region, entities: Iterable[str]) -> list[Attribution]:
        wanted = list(dict.fromkeys(entities))
        if not wanted:
            return []
        c = t.attributions.c
        rows = await self.session.execute(
            select(t.attributions)
            .where(c.region == region.value, c.entity_id.in_(wanted))
            .order_by(c.recorded_at, c.identifier, c.record)
            .with_for_update()
        )
        return [_attribution(r) for r in rows.all()]

    async def get_attribution(
        self, region: Region, identifier: str, entity: str, record: str
    ) -> Attribution | None:
        row = (
            await self.session.execute(
                select(t.attributions).where(_attribution_key(region, (identifier, entity, record)))
            )
        ).first()
        return _attribution(row) if row else None

    async def rekey(self, region: Region, a: Attribution, entity: str, via_change: str) -> bool:
        if entity == a.entity_id:
            return True
        held = await self.get_attribution(region, a.identifier, entity, a.record)
        if held is not None:
            await self.remove_attribution(region, a)
            return False
        await self.session.execute(
            update(t.attributions)
            .where(_attribution_key(region, a.key))
            .values(entity_id=entity, via_change=via_change)
        )
        return True

    async def remove_attribution(self, region: Region, a: Attribution) -> None:
        await self.session.execute(delete(t.attributions).where(_attribution_key(region, a.key)))

    async def restore_attribution(self, region: Region, a: Attribution) -> bool:
        result = await self.session.execute(
            pg_insert(t.attributions)
            .values(_attribution_values(region, a))
            .on_conflict_do_nothing()
            .returning(t.attributions.c.entity_id)
        )
        return result.first() is not None

    async def flag_attribution(self, region: Region, a: Attribution, review: str) -> None:
        await self.session.execute(
            update(t.attributions).where(_attribution_key(region, a.key)).values(review=review)
        )

    async def add_moves(self, region: Region, moves: list[AttributionMove]) -> None:
        if not moves:
            return
        await self.session.execute(
            t.attribution_history.insert().values(
                [
                    {
                        "region": region.value,
                        "change_id": m.change_id,
                        "kind": m.kind.value,
                        "identifier": m.before.identifier,
                        "entity_id": m.before.entity_id,
                        "record": m.before.record,
                        "to_entity": m.to_entity,
                        "outcome": m.outcome.value,
                        "label": m.before.label,
                        "source": m.before.source,
                        "recorded_by": m.before.recorded_by,
                        "recorded_at": m.before.recorded_at,
                        "via_change": m.before.via_change,
                        "review": m.before.review,
                        "note": m.note,
                        "at": m.at,
                    }
                    for m in moves
                ]
            )
        )

    async def moves_of(self, region: Region, change_id: str) -> list[AttributionMove]:
        h = t.attribution_history.c
        rows = await self.session.execute(
            select(t.attribution_history)
            .where(h.region == region.value, h.change_id == change_id)
            .order_by(h.recorded_at, h.identifier, h.record)
        )
        return [
            AttributionMove(
                r.change_id,
                ChangeKind(r.kind),
                _attribution(r),
                r.to_entity,
                Outcome(r.outcome),
                r.at,
                r.note,
            )
            for r in rows.all()
        ]

    # identity changes applied
    async def claim_change(self, region: Region, change: IdentityChange) -> bool:
        # A concurrent claim of the same change waits for the first to commit, then finds it.
        claimed = await self.session.execute(
            pg_insert(t.identity_changes)
            .values(
                region=region.value,
                change_id=change.change_id,
                kind=change.kind.value,
                entity=change.entity,
                merged=list(change.merged),
                moved_records=list(change.moved_records),
                moved_to=list(change.moved_to),
                undoes=change.undoes,
                undone_by=change.undone_by,
                decided_by=change.decided_by,
                occurred_at=change.occurred_at,
                applied_at=change.applied_at,
            )
            .on_conflict_do_nothing()
            .returning(t.identity_changes.c.change_id)
        )
        return claimed.first() is not None

    async def get_change(self, region: Region, change_id: str) -> IdentityChange | None:
        c = t.identity_changes.c
        row = (
            await self.session.execute(
                select(t.identity_changes)
                .where(c.region == region.value, c.change_id == change_id)
                .with_for_update()
            )
        ).first()
        return _change(row) if row else None

    async def undoer_of(self, region: Region, change_id: str) -> str | None:
        c = t.identity_changes.c
        found = await self.session.execute(
            select(c.change_id)
            .where(c.region == region.value, c.undoes == change_id)
            .order_by(c.occurred_at)
            .limit(1)
        )
        return found.scalar_one_or_none()

    async def mark_undone(self, region: Region, change_id: str, by: str) -> None:
        c = t.identity_changes.c
        await self.session.execute(
            update(t.identity_changes)
            .where(c.region == region.value, c.change_id == change_id)
            .values(undone_by=by)
        )

    async def absorbed_into(self, region: Region, entity: str) -> IdentityChange | None:
        c = t.identity_changes.c
        row = (
            await self.session.execute(
                select(t.identity_changes)
                .where(
                    c.merged.contains([entity]),
                    c.region == region.value,
                    c.kind == ChangeKind.MERGE.value,
                    c.undone_by == "",
                )
                .order_by(c.occurred_at.desc())
                .limit(1)
            )
        ).first()
        return _change(row) if row else None

    async def last_split_of(self, region: Region, record: str, after: datetime) -> IdentityChange | None:
        c = t.identity_changes.c
        row = (
            await self.session.execute(
                select(t.identity_changes)
                .where(
                    c.moved_records.contains([record]),
                    c.region == region.value,
                    c.kind == ChangeKind.SPLIT.value,
                    c.occurred_at > after,
                )
                .order_by(c.occurred_at.desc())
                .limit(1)
            )
        ).first()
        return _change(row) if row else None

    # advert flags
    async def add_flags(self, flags: list[AdvertFlag]) -> None:
        if not flags:
            return
        await self.session.execute(
            pg_insert(t.advert_flags)
            .values(
                [
                    {
                        "dataset_id": f.dataset_id,
                        "region": f.region.value,
                        "number": f.number,
                        "reasons": f.reasons,
                        "adverts": f.adverts,
                        "locations": f.locations,
                        "sites": f.sites,
                        "cdr_datasets": f.cdr_datasets,
                        "first_time": f.first,
                        "last_time": f.last,
                        "contact_datasets": f.contact_datasets,
                    }
                    for f in flags
                ]
            )
            .on_conflict_do_nothing()
        )

    async def list_flags(self, region: Region, dataset_id: str = "", job: str = "") -> list[AdvertFlag]:
        c = t.advert_flags.c
        query = select(t.advert_flags).where(c.region == region.value)
        if dataset_id:
            query = query.where(c.dataset_id == dataset_id)
        if job:
            query = query.where(c.dataset_id.in_(_datasets_of(region, job)))
        rows = await self.session.execute(query.order_by(c.adverts.desc(), c.number).limit(1000))
        return [
            AdvertFlag(
                r.dataset_id,
                Region(r.region),
                r.number,
                list(r.reasons),
                r.adverts,
                list(r.locations),
                list(r.sites),
                list(r.cdr_datasets),
                r.first_time,
                r.last_time,
                list(r.contact_datasets),
            )
            for r in rows.all()
        ]

    # jobs known from tasking events
    async def upsert_job(self, job: KnownJob) -> None:
        values = {
            "name": job.name,
            "region": job.region.value,
            "job_type": job.job_type,
            "handling": job.handling.value,
            "operation_name": job.operation_name,
        }
        await self.session.execute(
            pg_insert(t.known_jobs).values(values).on_conflict_do_update(index_elements=["name"], set_=values)
        )

    async def get_job(self, name: str) -> KnownJob | None:
        row = (await self.session.execute(select(t.known_jobs).where(t.known_jobs.c.name == name))).first()
        if row is None:
            return None
        return KnownJob(
            row.name, Region(row.region), row.job_type, Handling(row.handling), row.operation_name
        )
