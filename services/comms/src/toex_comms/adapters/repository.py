"""SQLAlchemy Core repository of the comms service. Never commits: the unit of work does."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from toex_kernel.regions import Region

from toex_comms.adapters import tables as t
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
)
from toex_comms.domain.profiles import MappingProfile


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


def _datasets_of(region: Region, job: str) -> Any:
    """The ids of the region's datasets attached to `job`, as a subquery."""
    d = t.datasets.c
    return select(d.id).where(d.region == region.value, d.job == job)


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
        row = (await self.session.execute(select(t.datasets).where(t.datasets.c.id == dataset_id))).first()
        return _dataset(row) if row else None

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
                region=region.value, profile_id=profile.profile_id, body=body, created_by=by, created_at=at
            )
            .on_conflict_do_nothing()
            .returning(t.mapping_profiles.c.profile_id)
        )
        return result.first() is not None

    async def list_profiles(self, region: Region) -> list[MappingProfile]:
        rows = (
            await self.session.execute(
                select(t.mapping_profiles)
                .where(t.mapping_profiles.c.region == region.value)
                .order_by(t.mapping_profiles.c.profile_id)
            )
        ).all()
        return [MappingProfile(r.profile_id, **r.body) for r in rows]

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
        return list(lists.values())

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
        await self.session.execute(
            pg_insert(t.attributions)
            .values(
                region=region.value,
                identifier=a.identifier,
                entity_id=a.entity_id,
                label=a.label,
                source=a.source,
                recorded_by=a.recorded_by,
                recorded_at=a.recorded_at,
            )
            .on_conflict_do_update(
                index_elements=["region", "identifier", "entity_id"],
                set_={
                    "label": a.label,
                    "source": a.source,
                    "recorded_by": a.recorded_by,
                    "recorded_at": a.recorded_at,
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
                .order_by(c.recorded_at)
            )
            for r in rows.all():
                out.setdefault(r.identifier, []).append(
                    Attribution(r.identifier, r.entity_id, r.label, r.source, r.recorded_by, r.recorded_at)
                )
        return out

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
