"""One handler per use case. Handlers decide; the unit of work commits; nothing here knows gRPC.

Bulk work (reading files, scanning Parquet) runs in a worker thread so the event loop keeps
serving other calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import polars as pl
from toex_common.context import touch
from toex_common.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfScope,
    Violations,
)
from toex_common.principal import Principal
from toex_common.regions import Region

from toex_comms import analysis
from toex_comms.adapters import ingest, integration
from toex_comms.adapters.store import DatasetStore
from toex_comms.adapters.uow import SqlCommsUnitOfWork
from toex_comms.domain import policy
from toex_comms.domain.commands import ImportFile, Scope
from toex_comms.domain.identifiers import (
    MAX_TARGETS_PER_ANALYSIS,
    BadIdentifier,
    normalise_vrm,
    parse_number_key,
)
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
    new_id,
)
from toex_comms.domain.profiles import BUILTIN_PROFILES, MappingProfile

log = logging.getLogger(__name__)
Clock = Callable[[], datetime]

# Defaults for what an import detects and publishes.
CONVOY_WINDOW_SECONDS = 180
CONVOY_MIN_OCCASIONS = 3
CONVOY_EVENTS_MAX = 50
ADVERT_MIN_ADVERTS = 3
ADVERT_MIN_LOCATIONS = 2


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Deps:
    uow: Callable[[], SqlCommsUnitOfWork]
    store: DatasetStore
    clock: Clock = utcnow
    batch_rows: int = ingest.BATCH_ROWS


@dataclass
class ImportOutcome:
    dataset: Dataset
    already_imported: bool
    rejections: list[tuple[int, str, str]]
    convoys: list[analysis.Convoy] = field(default_factory=list)
    flags: list[AdvertFlag] = field(default_factory=list)


# ---------------------------------------------------------------- datasets


async def _resolve_profile(uow: SqlCommsUnitOfWork, region: Region, name: str) -> MappingProfile:
    name = name or "canonical"
    if name in BUILTIN_PROFILES:
        return BUILTIN_PROFILES[name]
    for profile in await uow.repo.list_profiles(region):
        if profile.profile_id == name:
            return profile
    raise InvalidArgument.field("header.profile", f"no mapping profile {name!r} in {region.value}")


async def import_file(cmd: ImportFile, deps: Deps) -> ImportOutcome:
    what = f"regions/{cmd.region.value}"
    policy.ensure_can_change(cmd.actor, cmd.region, what)
    if cmd.job and not cmd.job.startswith(f"regions/{cmd.region.value}/jobs/"):
        raise InvalidArgument.field(
            "header.job", f"must be a job of {cmd.region.value}: regions/{cmd.region.value}/jobs/ID"
        )
    async with deps.uow() as uow:
        same = await uow.repo.find_same_file(cmd.region, cmd.job, cmd.kind, cmd.content_sha256)
        if same is not None:
            touch(same.name)
            return ImportOutcome(same, True, await asyncio.to_thread(deps.store.rejections, same.id, 0, 100))
        profile = (
            await _resolve_profile(uow, cmd.region, cmd.profile) if cmd.kind is DatasetKind.CDR else None
        )
        job = await uow.repo.get_job(cmd.job) if cmd.job else None
        members = await uow.repo.members(cmd.region) if cmd.kind is not DatasetKind.ANPR else {}
        region_cdr = (
            [d.id for d in await uow.repo.list_datasets([cmd.region], "", DatasetKind.CDR, 100_000)]
            if cmd.kind is DatasetKind.ADVERTS
            else []
        )
    handling = cmd.handling or (job.handling if job else Handling.C)
    dataset = Dataset(
        id=new_id(),
        region=cmd.region,
        kind=cmd.kind,
        job=cmd.job,
        display_name=cmd.display_name or cmd.filename or "unnamed",
        source_filename=cmd.filename,
        content_sha256=cmd.content_sha256,
        profile=profile.profile_id if profile else "",
        handling=handling,
        created_by=cmd.actor.username,
        created_at=deps.clock(),
        size_bytes=cmd.size_bytes,
    )
    staged = deps.store.staging(dataset.id)
    try:
        result = await asyncio.to_thread(_ingest, cmd.kind, cmd.upload, staged, profile, deps.batch_rows)
    except ingest.FileProblem as exc:
        deps.store.discard(dataset.id)
        raise InvalidArgument.field("chunk", str(exc)) from None
    except BaseException:
        deps.store.discard(dataset.id)
        raise
    dataset.rows_read = result.rows_read
    dataset.rows_accepted = result.rows_accepted
    dataset.rows_rejected = result.rows_rejected
    dataset.distinct_identifiers = result.distinct_identifiers
    dataset.first_time, dataset.last_time = result.first_time, result.last_time
    outcome = ImportOutcome(dataset, False, result.sample_rejections)
    try:
        contacts: list[WatchlistContact] = []
        if cmd.kind is DatasetKind.CDR and members:
            rows = deps.store.rows([dataset.id], staged=True)
            contacts = await asyncio.to_thread(_detect_contacts, rows, dataset, members, deps.clock())
        if cmd.kind is DatasetKind.ANPR:
            rows = deps.store.rows([dataset.id], schema=ingest.ANPR_SCHEMA, staged=True)
            outcome.convoys = await asyncio.to_thread(
                analysis.convoys,
                rows,
                window_seconds=CONVOY_WINDOW_SECONDS,
                min_occasions=CONVOY_MIN_OCCASIONS,
                limit=CONVOY_EVENTS_MAX,
            )
        if cmd.kind is DatasetKind.ADVERTS:
            rows = deps.store.rows([dataset.id], schema=ingest.ADVERT_SCHEMA, staged=True)
            outcome.flags = await asyncio.to_thread(
                _flag_adverts, rows, dataset, deps.store, region_cdr, members
            )
        deps.store.publish(dataset.id)
        async with deps.uow() as uow:
            await uow.repo.add_dataset(dataset)
            uow.publish(integration.dataset_imported(dataset))
            await _publish_contacts(uow, dataset, contacts)
            for c in outcome.convoys:
                uow.publish(
                    integration.convoy_detected(
                        dataset,
                        c.vrm_a,
                        c.vrm_b,
                        c.occasions,
                        c.cameras,
                        c.first,
                        c.last,
                        c.median_gap,
                        CONVOY_WINDOW_SECONDS,
                    )
                )
            if outcome.flags:
                await uow.repo.add_flags(outcome.flags)
                entities = await uow.repo.attributions(
                    dataset.region, [f"+{f.number}" for f in outcome.flags]
                )
                for f in outcome.flags:
                    found = entities.get(f"+{f.number}", [])
                    uow.publish(
                        integration.advert_number_flagged(f, dataset, found[0].entity_id if found else "")
                    )
            await uow.commit()
    except BaseException:
        deps.store.discard(dataset.id)
        raise
    touch(dataset.name)
    return outcome


def _ingest(
    kind: DatasetKind, src: Any, out: Any, profile: MappingProfile | None, batch_rows: int
) -> ingest.IngestResult:
    if kind is DatasetKind.CDR:
        assert profile is not None
        return ingest.ingest_cdr(src, out, profile, batch_rows=batch_rows)
    if kind is DatasetKind.ANPR:
        return ingest.ingest_anpr(src, out, batch_rows=batch_rows)
    return ingest.ingest_adverts(src, out, batch_rows=batch_rows)


def _detect_contacts(
    rows: pl.LazyFrame, dataset: Dataset, members: dict[int, list[tuple[str, WatchlistKind]]], now: datetime
) -> list[WatchlistContact]:
    names = {n: [wid for wid, _ in lists] for n, lists in members.items()}
    kinds = {wid: kind for lists in members.values() for wid, kind in lists}
    found = analysis.watchlist_contacts(rows, names)
    return [
        WatchlistContact(
            id=new_id(),
            region=dataset.region,
            dataset_id=dataset.id,
            list_a=r["list_a"],
            kind_a=kinds[r["list_a"]],
            number_a=r["number_a"],
            list_b=r["list_b"],
            kind_b=kinds[r["list_b"]],
            number_b=r["number_b"],
            first=r["first"],
            last=r["last"],
            contacts=r["contacts"],
            calls=r["calls"],
            sms=r["sms"],
            duration=r["duration"],
            detected_at=now,
        )
        for r in found.iter_rows(named=True)
    ]


async def _publish_contacts(
    uow: SqlCommsUnitOfWork, dataset: Dataset, contacts: list[WatchlistContact]
) -> list[WatchlistContact]:
    fresh_ids = set(await uow.repo.add_contacts(contacts))
    fresh = [c for c in contacts if c.id in fresh_ids]
    if fresh:
        numbers = [f"+{c.number_a}" for c in fresh] + [f"+{c.number_b}" for c in fresh]
        entities = await uow.repo.attributions(dataset.region, numbers)

        def first_entity(number: int) -> str:
            found = entities.get(f"+{number}", [])
            return found[0].entity_id if found else ""

        for c in fresh:
            uow.publish(
                integration.watchlist_contact_detected(
                    c, dataset, first_entity(c.number_a), first_entity(c.number_b)
                )
            )
    return fresh


def _flag_adverts(
    rows: pl.LazyFrame,
    dataset: Dataset,
    store: DatasetStore,
    region_cdr: list[str],
    members: dict[int, list[tuple[str, WatchlistKind]]],
) -> list[AdvertFlag]:
    summary = analysis.advert_summary(rows)
    numbers = summary["number"].to_list()
    seen_in: dict[int, list[str]] = {}
    in_contact: set[int] = set()
    if region_cdr and numbers:
        hits = (
            store.numbers(region_cdr)
            .filter(pl.col("number").is_in(numbers))
            .select("number", "dataset_id")
            .collect()
        )
        for number, dataset_id in hits.iter_rows():
            seen_in.setdefault(number, []).append(f"regions/{dataset.region.value}/datasets/{dataset_id}")
        watched = list(members)
        if watched:
            cdr = store.rows(region_cdr)
            linked = (
                cdr.filter(
                    (pl.col("a").is_in(numbers) & pl.col("b").is_in(watched))
                    | (pl.col("b").is_in(numbers) & pl.col("a").is_in(watched))
                )
                .select(pl.when(pl.col("a").is_in(numbers)).then("a").otherwise("b").alias("n"))
                .unique()
                .collect()
            )
            in_contact = set(linked["n"].to_list())
    flags: list[AdvertFlag] = []
    for r in summary.iter_rows(named=True):
        reasons = []
        if r["adverts"] >= ADVERT_MIN_ADVERTS:
            reasons.append("many_adverts")
        if len(r["locations"]) >= ADVERT_MIN_LOCATIONS:
            reasons.append("many_locations")
        if r["number"] in seen_in:
            reasons.append("in_phone_index")
        if r["number"] in in_contact:
            reasons.append("in_contact_network")
        if reasons:
            flags.append(
                AdvertFlag(
                    dataset.id,
                    dataset.region,
                    r["number"],
                    reasons,
                    r["adverts"],
                    r["locations"],
                    r["sites"],
                    sorted(seen_in.get(r["number"], [])),
                    r["first"],
                    r["last"],
                )
            )
    return flags


async def get_dataset(actor: Principal, region: Region, dataset_id: str, deps: Deps) -> Dataset:
    name = f"regions/{region.value}/datasets/{dataset_id}"
    async with deps.uow() as uow:
        dataset = await uow.repo.get_dataset(dataset_id)
    if dataset is None or dataset.region is not region:
        raise NotFound(f"dataset {name} not found")
    if not policy.can_see(actor, dataset.region):
        raise OutOfScope(f"dataset {name} not found")
    touch(name)
    return dataset


async def list_datasets(
    actor: Principal,
    region: Region | None,
    job: str,
    kind: DatasetKind | None,
    limit: int,
    after: tuple[datetime, str] | None,
    deps: Deps,
) -> list[Dataset]:
    regions = policy.visible_regions(actor, region)
    async with deps.uow() as uow:
        found = await uow.repo.list_datasets(regions, job, kind, limit, after)
    touch(*(d.name for d in found))
    return found


async def list_rejections(
    actor: Principal, region: Region, dataset_id: str, offset: int, limit: int, deps: Deps
) -> tuple[Dataset, list[tuple[int, str, str]]]:
    dataset = await get_dataset(actor, region, dataset_id, deps)
    return dataset, await asyncio.to_thread(deps.store.rejections, dataset_id, offset, limit)


# ---------------------------------------------------------------- profiles


async def create_profile(
    actor: Principal, region: Region, profile: MappingProfile, deps: Deps
) -> MappingProfile:
    policy.ensure_can_change(actor, region, f"regions/{region.value}")
    problems = Violations()
    for f, d in profile.problems():
        problems.add(f, d)
    if profile.profile_id in BUILTIN_PROFILES:
        problems.add("profile_id", "that is the name of a built-in profile")
    problems.raise_if_any()
    async with deps.uow() as uow:
        if not await uow.repo.add_profile(region, profile, actor.username, deps.clock()):
            raise AlreadyExists(f"mapping profile {profile.profile_id} already exists in {region.value}")
        await uow.commit()
    return profile


async def list_profiles(actor: Principal, region: Region, deps: Deps) -> list[MappingProfile]:
    policy.ensure_visible(actor, region, f"regions/{region.value}")
    async with deps.uow() as uow:
        return [*BUILTIN_PROFILES.values(), *await uow.repo.list_profiles(region)]


# ---------------------------------------------------------------- scope of analyses


async def resolve_scope(scope: Scope, kind: DatasetKind, deps: Deps) -> tuple[list[Dataset], pl.LazyFrame]:
    policy.ensure_visible(scope.actor, scope.region, f"regions/{scope.region.value}")
    async with deps.uow() as uow:
        everything = await uow.repo.list_datasets([scope.region], scope.job, kind, 100_000)
    if scope.dataset_ids:
        by_id = {d.id: d for d in everything}
        missing = [i for i in scope.dataset_ids if i not in by_id]
        if missing:
            raise NotFound(f"dataset regions/{scope.region.value}/datasets/{missing[0]} not found")
        chosen = [by_id[i] for i in scope.dataset_ids]
    else:
        chosen = everything
    touch(*(d.name for d in chosen))
    schema = ingest.CDR_SCHEMA if kind is DatasetKind.CDR else ingest.ANPR_SCHEMA
    rows = deps.store.rows([d.id for d in chosen], schema=schema)  # type: ignore[arg-type]
    column = "start" if kind is DatasetKind.CDR else "time"
    return chosen, analysis.window(rows, column, scope.start, scope.end)  # type: ignore[arg-type]


def whole_dataset_pairs(scope: Scope, chosen: list[Dataset], deps: Deps) -> pl.LazyFrame | None:
    """The chosen datasets' pair totals (written on import), when the time window holds every
    record of them; otherwise None and the analysis reads the records in the window."""
    start, end = scope.start, scope.end
    for d in chosen:
        if d.first_time is None or d.last_time is None:
            continue
        if start is not None and start > d.first_time:  # type: ignore[operator]
            return None
        if end is not None and end <= d.last_time:  # type: ignore[operator]
            return None
    return deps.store.pairs([d.id for d in chosen])


async def attributions_for(
    region: Region, identifiers: list[str], deps: Deps
) -> dict[str, list[Attribution]]:
    async with deps.uow() as uow:
        return await uow.repo.attributions(region, identifiers)


async def watchlists_for(region: Region, deps: Deps) -> dict[int, list[tuple[str, WatchlistKind]]]:
    async with deps.uow() as uow:
        return await uow.repo.members(region)


# ---------------------------------------------------------------- phone index


@dataclass
class IndexHit:
    number: str
    entries: list[dict[str, Any]]
    attributions: list[Attribution]
    watchlists: list[tuple[str, WatchlistKind]]
    advert_datasets: list[str]


async def search_index(
    actor: Principal, region: Region | None, raw: str, deps: Deps
) -> tuple[IndexHit, list[Region]]:
    try:
        key = parse_number_key(raw)
    except BadIdentifier as exc:
        raise InvalidArgument.field("number", str(exc)) from None
    regions = policy.visible_regions(actor, region)
    async with deps.uow() as uow:
        cdr = await uow.repo.list_datasets(regions, "", DatasetKind.CDR, 100_000)
        adverts = await uow.repo.list_datasets(regions, "", DatasetKind.ADVERTS, 100_000)
        own = region or actor.region
        attributions = (await uow.repo.attributions(own, [f"+{key}"])).get(f"+{key}", [])
        lists = (await uow.repo.members(own)).get(key, [])
    names = {d.id: d.name for d in cdr}

    def scan() -> tuple[list[dict[str, Any]], list[str]]:
        hits = deps.store.numbers(list(names)).filter(pl.col("number") == key).collect()
        in_adverts = [
            d.name
            for d in adverts
            if deps.store.rows([d.id], schema=ingest.ADVERT_SCHEMA)
            .filter(pl.col("number") == key)
            .head(1)
            .collect()
            .height
        ]
        return [{**r, "dataset": names[r["dataset_id"]]} for r in hits.iter_rows(named=True)], in_adverts

    entries, in_adverts = await asyncio.to_thread(scan)
    touch(*(e["dataset"] for e in entries))
    return IndexHit(f"+{key}", entries, attributions, lists, in_adverts), regions or []


async def list_index(
    actor: Principal, region: Region, dataset_ids: tuple[str, ...], after: int, limit: int, deps: Deps
) -> list[dict[str, Any]]:
    chosen, _ = await resolve_scope(Scope(actor, region, dataset_ids, ""), DatasetKind.CDR, deps)

    def scan() -> list[dict[str, Any]]:
        frame = (
            deps.store.numbers([d.id for d in chosen])
            .filter(pl.col("number") > after)
            .group_by("number")
            .agg(
                pl.col("events").sum(),
                pl.col("calls").sum(),
                pl.col("sms").sum(),
                pl.col("duration").sum(),
                pl.col("first").min(),
                pl.col("last").max(),
            )
            .sort("number")
            .head(limit)
            .collect()
        )
        return list(frame.iter_rows(named=True))

    return await asyncio.to_thread(scan)


async def attribute(
    actor: Principal, region: Region, identifier: str, vehicle: bool, entity_id: str, label: str, deps: Deps
) -> Attribution:
    policy.ensure_can_change(actor, region, f"regions/{region.value}")
    problems = Violations()
    normal = ""
    try:
        normal = normalise_vrm(identifier) if vehicle else f"+{parse_number_key(identifier)}"
    except BadIdentifier as exc:
        problems.add("identifier", str(exc))
    if not entity_id.strip():
        problems.add("entity_id", "say which entity the identifier belongs to")
    problems.raise_if_any()
    found = Attribution(normal, entity_id.strip(), label.strip(), "manual", actor.username, deps.clock())
    async with deps.uow() as uow:
        await uow.repo.attribute(region, found)
        await uow.commit()
    return found


# ---------------------------------------------------------------- watchlists


async def create_watchlist(
    actor: Principal, region: Region, watchlist_id: str, display_name: str, kind: WatchlistKind, deps: Deps
) -> Watchlist:
    from toex_comms.domain.profiles import PROFILE_ID

    policy.ensure_can_change(actor, region, f"regions/{region.value}")
    if not PROFILE_ID.match(watchlist_id):
        raise InvalidArgument.field(
            "watchlist_id", "lower-case letters, digits and hyphens, starting with a letter"
        )
    watchlist = Watchlist(
        region, watchlist_id, display_name or watchlist_id, kind, actor.username, deps.clock()
    )
    async with deps.uow() as uow:
        if not await uow.repo.add_watchlist(watchlist):
            raise AlreadyExists(f"watchlist {watchlist.name} already exists")
        await uow.commit()
    touch(watchlist.name)
    return watchlist


async def add_watchlist_numbers(
    actor: Principal, region: Region, watchlist_id: str, raws: list[str], deps: Deps
) -> tuple[Watchlist, list[WatchlistContact]]:
    name = f"regions/{region.value}/watchlists/{watchlist_id}"
    policy.ensure_can_change(actor, region, name)
    problems = Violations()
    keys: list[int] = []
    for i, raw in enumerate(raws):
        try:
            keys.append(parse_number_key(raw))
        except BadIdentifier as exc:
            problems.add(f"numbers[{i}]", str(exc))
    if not raws:
        problems.add("numbers", "give at least one number")
    problems.raise_if_any()
    async with deps.uow() as uow:
        lists = await uow.repo.list_watchlists(region, watchlist_id)
        if not lists:
            raise NotFound(f"watchlist {name} not found")
        await uow.repo.add_numbers(region, watchlist_id, keys)
        await uow.commit()
        members = await uow.repo.members(region)
        datasets = await uow.repo.list_datasets([region], "", DatasetKind.CDR, 100_000)
    touch(name)
    # Check the region's call data for contacts the new numbers make with other lists.
    new_contacts: list[WatchlistContact] = []
    now = deps.clock()
    for dataset in datasets:
        rows = deps.store.rows([dataset.id])
        found = await asyncio.to_thread(_detect_contacts, rows, dataset, members, now)
        if not found:
            continue
        async with deps.uow() as uow:
            new_contacts.extend(await _publish_contacts(uow, dataset, found))
            await uow.commit()
    async with deps.uow() as uow:
        watchlist = (await uow.repo.list_watchlists(region, watchlist_id))[0]
    return watchlist, new_contacts


async def list_watchlists(actor: Principal, region: Region, deps: Deps) -> list[Watchlist]:
    policy.ensure_visible(actor, region, f"regions/{region.value}")
    async with deps.uow() as uow:
        found = await uow.repo.list_watchlists(region)
    touch(*(w.name for w in found))
    return found


async def list_watchlist_contacts(
    actor: Principal, region: Region, limit: int, deps: Deps
) -> list[WatchlistContact]:
    policy.ensure_visible(actor, region, f"regions/{region.value}")
    async with deps.uow() as uow:
        found = await uow.repo.list_contacts(region, limit)
    touch(*(c.name for c in found))
    return found


async def list_flags(actor: Principal, region: Region, dataset_id: str, deps: Deps) -> list[AdvertFlag]:
    policy.ensure_visible(actor, region, f"regions/{region.value}")
    async with deps.uow() as uow:
        return await uow.repo.list_flags(region, dataset_id)


# ---------------------------------------------------------------- events consumed


async def on_job_created(
    job_name: str, region: Region, job_type: str, handling: Handling, operation: str, uow: SqlCommsUnitOfWork
) -> None:
    """Remember comms and ANPR jobs: their handling code becomes the default of their datasets."""
    if job_type not in ("comms_analysis", "anpr"):
        return
    await uow.repo.upsert_job(KnownJob(job_name, region, job_type, handling, operation))


async def on_record_linked(
    region: Region,
    entity_id: str,
    numbers: list[str],
    vrms: list[str],
    decided_by: str,
    at: datetime,
    uow: SqlCommsUnitOfWork,
) -> None:
    """Attribute the phone numbers and vehicles of a resolved entity."""
    for raw in numbers:
        try:
            identifier = f"+{parse_number_key(raw)}"
        except BadIdentifier:
            continue
        await uow.repo.attribute(
            region, Attribution(identifier, entity_id, "", "entity-resolution", decided_by, at)
        )
    for raw in vrms:
        try:
            identifier = normalise_vrm(raw)
        except BadIdentifier:
            continue
        await uow.repo.attribute(
            region, Attribution(identifier, entity_id, "", "entity-resolution", decided_by, at)
        )


def ensure_targets(targets: list[int], field: str = "targets") -> None:
    if not targets:
        raise InvalidArgument.field(field, "give at least one target number")
    if len(targets) > MAX_TARGETS_PER_ANALYSIS:
        raise FailedPrecondition(f"at most {MAX_TARGETS_PER_ANALYSIS} targets per analysis")
