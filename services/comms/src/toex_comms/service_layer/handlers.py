"""One handler per use case. Handlers decide; the unit of work commits; nothing here knows gRPC.

Handlers reach the database through the unit of work and the datasets' files through the
dataset store (service_layer/ports.py). Bulk work (reading files, scanning Parquet, every
analysis) runs in a worker thread so the event loop keeps serving other calls."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import polars as pl
from toex_common.context import touch
from toex_kernel.accounts import AccountError, parse_account
from toex_kernel.clock import Clock, utcnow
from toex_kernel.errors import AlreadyExists, InvalidArgument, NotFound, OutOfScope, Violations
from toex_kernel.grants import is_job_of, job_of_purpose
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_comms.domain import advert_networks, analysis, commands, events, policy
from toex_comms.domain.advert_networks import AdvertNetwork
from toex_comms.domain.commands import ExportFormat, Scope
from toex_comms.domain.identifiers import BadIdentifier, normalise_vrm, parse_number_key
from toex_comms.domain.model import (
    AdvertFlag,
    Attribution,
    Dataset,
    DatasetKind,
    FileProblem,
    Handling,
    KnownJob,
    Labels,
    Watchlist,
    WatchlistContact,
    WatchlistKind,
    new_id,
)
from toex_comms.domain.profiles import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE,
    KIND_WORDS,
    PROFILE_ID,
    MappingProfile,
)
from toex_comms.service_layer import detection, identity
from toex_comms.service_layer.ports import (
    CommsUnitOfWork,
    DatasetStore,
    Exporter,
    Members,
    Upload,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# Defaults for what an import detects and publishes.
CONVOY_WINDOW_SECONDS = 180
CONVOY_MIN_OCCASIONS = 3
CONVOY_EVENTS_MAX = 50
# Advert networks published per advert import (the most highly ranked: a child first).
ADVERT_NETWORK_EVENTS_MAX = 200
# The name and media type of each export.
EXPORT_FILES = {
    ExportFormat.GRAPHML: ("network.graphml", "application/graphml+xml"),
    ExportFormat.I2_LINK_CSV: ("network-i2-links.csv", "text/csv"),
    ExportFormat.SVG: ("network.svg", "image/svg+xml"),
    ExportFormat.PNG: ("network.png", "image/png"),
    ExportFormat.INDEX_CSV: ("phone-index.csv", "text/csv"),
    ExportFormat.INDEX_XLSX: (
        "phone-index.xlsx",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ),
    ExportFormat.ADVERT_NETWORKS_GRAPHML: ("advert-networks.graphml", "application/graphml+xml"),
    ExportFormat.ADVERT_NETWORKS_I2_LINK_CSV: ("advert-networks-i2-links.csv", "text/csv"),
    ExportFormat.ADVERT_NETWORKS_CSV: ("advert-networks.csv", "text/csv"),
}
# Every dataset of a region (a region holds far fewer).
ALL = 100_000


@dataclass
class Deps:
    uow: Callable[[], CommsUnitOfWork]
    store: DatasetStore
    exporter: Exporter
    # Largest file an import accepts: larger uploads are refused before they fill the disk.
    max_upload_bytes: int = 1024**3
    clock: Clock = utcnow


@dataclass
class ImportOutcome:
    dataset: Dataset
    already_imported: bool
    rejections: list[tuple[int, str, str]]
    convoys: list[analysis.Convoy] = field(default_factory=list)
    flags: list[AdvertFlag] = field(default_factory=list)


@dataclass(frozen=True)
class Analysed(Generic[T]):
    """An analysis' answer and what the region knows of the identifiers in it."""

    found: T
    labels: Labels


@dataclass(frozen=True)
class ExportFile:
    path: Path  # a file of the dataset store's; whoever sends it deletes it
    filename: str
    content_type: str


# ---------------------------------------------------------------- imports


async def import_file(cmd: commands.ImportFile, deps: Deps) -> ImportOutcome:
    """Receive the upload, then read it into a dataset. Nothing of a refused upload is kept."""
    if cmd.declared_size > deps.max_upload_bytes:
        raise InvalidArgument.field(
            "header.size_bytes", f"the file is larger than the limit of {deps.max_upload_bytes} bytes"
        )
    try:
        upload = deps.store.receive(cmd.encoding, deps.max_upload_bytes)
    except FileProblem as exc:
        raise InvalidArgument.field("header.encoding", str(exc)) from None
    try:
        async for chunk in cmd.chunks:
            try:
                upload.write(chunk)
            except FileProblem as exc:
                raise InvalidArgument.field("chunk", str(exc)) from None
        sha = upload.close()
        return await _import_upload(cmd, upload, sha, deps)
    finally:
        upload.discard()


async def _resolve_profile(
    uow: CommsUnitOfWork, region: Region, name: str, kind: DatasetKind
) -> MappingProfile | None:
    """The profile an import of `kind` reads its file through (None: the kind takes none); one
    of another kind is refused rather than read as if it fitted."""
    if kind not in DEFAULT_PROFILE:
        return None
    name = name or DEFAULT_PROFILE[kind]
    found = BUILTIN_PROFILES.get(name)
    if found is None:
        found = next((p for p in await uow.repo.list_profiles(region) if p.profile_id == name), None)
    if found is None:
        raise InvalidArgument.field("header.profile", f"no mapping profile {name!r} in {region.value}")
    if found.kind is not kind:
        raise InvalidArgument.field(
            "header.profile",
            f"mapping profile {name!r} reads {KIND_WORDS[found.kind]}, not {KIND_WORDS[kind]}: name "
            f"a profile of kind {KIND_WORDS[kind]} (ListMappingProfiles lists each profile's kind)",
        )
    return found


async def _import_upload(cmd: commands.ImportFile, upload: Upload, sha: str, deps: Deps) -> ImportOutcome:
    what = f"regions/{cmd.region.value}"
    async with deps.uow() as uow:
        reach = await _reach(uow, cmd.actor, cmd.region, cmd.purpose, what, change=True)
        # Under a grant the new dataset is the job's: stored in the job's region, attached to it.
        reach.ensure_admits(cmd.job, what)
        if cmd.job and not is_job_of(cmd.job, cmd.region):
            raise InvalidArgument.field(
                "header.job", f"must be a job of {cmd.region.value}: regions/{cmd.region.value}/jobs/ID"
            )
        # Before the same-file answer, so a profile of the wrong kind is always refused.
        profile = await _resolve_profile(uow, cmd.region, cmd.profile, cmd.kind)
        same = await uow.repo.find_same_file(cmd.region, cmd.job, cmd.kind, sha)
        if same is not None:
            touch(same.name)
            return ImportOutcome(same, True, await asyncio.to_thread(deps.store.rejections, same.id, 0, 100))
        job = await uow.repo.get_job(cmd.job) if cmd.job else None
        members = await uow.repo.members(cmd.region) if cmd.kind is not DatasetKind.ANPR else {}
        account_lists = await uow.repo.account_members(cmd.region) if cmd.kind is DatasetKind.ADVERTS else {}
        # Networks are found over the adverts of the same job (or the region's own datasets).
        advert_peers = (
            [
                d.id
                for d in await uow.repo.list_datasets([cmd.region], cmd.job, DatasetKind.ADVERTS, ALL)
                if d.job == cmd.job
            ]
            if cmd.kind is DatasetKind.ADVERTS
            else []
        )
        # Adverts are checked against the call data the importer reaches: a holder's, the job's.
        region_cdr = (
            [d.id for d in await uow.repo.list_datasets([cmd.region], reach.job, DatasetKind.CDR, ALL)]
            if cmd.kind is DatasetKind.ADVERTS
            else []
        )
    dataset = Dataset(
        id=new_id(),
        region=cmd.region,
        kind=cmd.kind,
        job=cmd.job,
        display_name=cmd.display_name or cmd.filename or "unnamed",
        source_filename=cmd.filename,
        content_sha256=sha,
        profile=profile.profile_id if profile else "",
        handling=cmd.handling or (job.handling if job else Handling.C),
        created_by=cmd.actor.username,
        created_at=deps.clock(),
        size_bytes=upload.size_bytes,
    )
    try:
        result = await asyncio.to_thread(deps.store.ingest, cmd.kind, upload, dataset.id, profile)
    except FileProblem as exc:
        deps.store.discard(dataset.id)
        raise InvalidArgument.field("chunk", str(exc)) from None
    except BaseException:
        deps.store.discard(dataset.id)
        raise
    dataset.imported(result)
    outcome = ImportOutcome(dataset, False, result.sample_rejections)
    try:
        await _detect(dataset, Watching(members, account_lists), region_cdr, advert_peers, outcome, deps)
    except BaseException:
        deps.store.discard(dataset.id)
        raise
    touch(dataset.name)
    return outcome


@dataclass(frozen=True)
class Watching:
    """The region's watchlists as an import checks them: numbers, and accounts."""

    members: Members
    accounts: dict[str, list[str]]


async def _detect(
    dataset: Dataset,
    watching: Watching,
    region_cdr: list[str],
    advert_peers: list[str],
    outcome: ImportOutcome,
    deps: Deps,
) -> None:
    """What a new dataset shows (watchlist contacts, convoys, advert flags, the identifiers it
    holds), stored and published with the dataset itself: its own events first, then the
    findings recorded on the unit of work."""
    members = watching.members
    contacts: list[WatchlistContact] = []
    if dataset.kind is DatasetKind.CDR and members:
        rows = deps.store.rows([dataset.id], staged=True)
        contacts = await asyncio.to_thread(detection.watchlist_contacts, rows, dataset, members, deps.clock())
    if dataset.kind is DatasetKind.ANPR:
        rows = deps.store.rows([dataset.id], DatasetKind.ANPR, staged=True)
        outcome.convoys = await asyncio.to_thread(
            analysis.convoys,
            rows,
            window_seconds=CONVOY_WINDOW_SECONDS,
            min_occasions=CONVOY_MIN_OCCASIONS,
            limit=CONVOY_EVENTS_MAX,
        )
        dataset.convoys_found(outcome.convoys, CONVOY_WINDOW_SECONDS)
    networks: list[AdvertNetwork] = []
    ours: set[str] = set()
    if dataset.kind is DatasetKind.ADVERTS:
        rows = deps.store.rows([dataset.id], DatasetKind.ADVERTS, staged=True)
        outcome.flags = await asyncio.to_thread(
            detection.flag_adverts, rows, dataset, deps.store, region_cdr, members
        )
        lists = {n: [name for name, _ in found] for n, found in members.items()}
        every = pl.concat([deps.store.rows(advert_peers, DatasetKind.ADVERTS), rows], how="diagonal_relaxed")

        def find() -> tuple[list[AdvertNetwork], set[str]]:
            found = advert_networks.find_networks(
                every.collect(),
                watchlists=lists,
                account_watchlists=watching.accounts,
                scope=advert_networks.network_scope(dataset.region.value, dataset.job),
            )
            return found, set(rows.select("advert_id").collect()["advert_id"].to_list())

        networks, ours = await asyncio.to_thread(find)
    deps.store.publish(dataset.id)
    # Published with the dataset, in its transaction (the outbox): a crash loses neither.
    dataset.identifiers_found(await asyncio.to_thread(detection.identifiers, dataset, deps.store))
    async with deps.uow() as uow:
        await uow.repo.add_dataset(dataset)  # tracked: its own events are published first
        await _record_contacts(uow, dataset, contacts)
        if outcome.flags:
            await uow.repo.add_flags(outcome.flags)
            entities = await uow.repo.attributions(dataset.region, [f"+{f.number}" for f in outcome.flags])
            name = dataset.name
            for f in outcome.flags:
                found = entities.get(f"+{f.number}", [])
                uow.record(
                    events.AdvertNumberFlagged(
                        f, name, dataset.job, dataset.handling, found[0].entity_id if found else ""
                    )
                )
        if networks:
            fresh = await _settle_network_ids(uow, dataset, networks)
            # Once per network: only a network none of whose adverts had an id (a network re-found
            # or grown keeps its id and is not published again), and only one this dataset adds to;
            # and again, under its id, a network this dataset's adverts show a child in, so that
            # safeguarding hears of it (its open referral for the network takes the new evidence).
            new = [
                n
                for n, is_new in zip(networks, fresh, strict=True)
                if ours.intersection(n.adverts) and (is_new or _child_shown_by(n, ours))
            ]
            for n in new[:ADVERT_NETWORK_EVENTS_MAX]:
                uow.record(
                    events.AdvertNetworkDetected(
                        n, dataset.region, dataset.name, dataset.job, dataset.handling
                    )
                )
        await uow.commit()


def _child_shown_by(network: AdvertNetwork, adverts: set[str]) -> bool:
    """Whether any of `adverts` is one the network's child indications name."""
    return any(
        reason.partition(":")[0].removeprefix("advert ") in adverts for reason in network.minor_reasons
    )


async def _settle_network_ids(
    uow: CommsUnitOfWork, dataset: Dataset, networks: list[AdvertNetwork]
) -> list[bool]:
    """Give the networks of a job's adverts their stored ids and store the new ones (one import
    of the job at a time); whether each network is new."""
    await uow.repo.lock_advert_networks(dataset.region, dataset.job)
    adverts = [a for n in networks for a in n.adverts]
    known = await uow.repo.advert_network_ids(dataset.region, dataset.job, adverts)
    fresh = advert_networks.settle_ids(networks, known)
    members = {a: n.network_id for n in networks for a in n.adverts if known.get(a) != n.network_id}
    await uow.repo.record_advert_networks(
        dataset.region, dataset.job, members, dataset.name, dataset.created_at
    )
    return fresh


async def _record_contacts(
    uow: CommsUnitOfWork, dataset: Dataset, contacts: list[WatchlistContact]
) -> list[WatchlistContact]:
    """Store the contacts found in `dataset`; each not stored before is recorded for publishing
    (once: the table keeps one per dataset, numbers and lists). The new ones."""
    fresh_ids = set(await uow.repo.add_contacts(contacts))
    fresh = [c for c in contacts if c.id in fresh_ids]
    if fresh:
        numbers = [f"+{c.number_a}" for c in fresh] + [f"+{c.number_b}" for c in fresh]
        entities = await uow.repo.attributions(dataset.region, numbers)

        def first_entity(number: int) -> str:
            found = entities.get(f"+{number}", [])
            return found[0].entity_id if found else ""

        for c in fresh:
            uow.record(
                events.WatchlistContactDetected(
                    c, dataset.job, dataset.handling, first_entity(c.number_a), first_entity(c.number_b)
                )
            )
    return fresh


# ---------------------------------------------------------------- datasets


async def _reach(
    uow: CommsUnitOfWork, actor: Principal, region: Region, purpose: str, what: str, *, change: bool = False
) -> policy.Reach:
    """How far the call reaches into `region` (domain/policy.py decides). The grant of the job
    the purpose names is read only for a caller who does not reach the region without one, so
    the region's own people pay nothing for grants.

    `what` names the resource as a refusal names it ("dataset regions/R/datasets/D", or
    "regions/R"); its name is recorded for the audit log first, so a refused call's entry says
    what was asked for, as an allowed one's does."""
    touch(what.rsplit(" ", 1)[-1])
    needed = policy.needs_grant(actor, region, change=change)
    grant = await uow.grants.for_purpose(purpose) if needed else None
    return policy.reach(actor, region, grant, what, change=change)


async def get_dataset(q: commands.GetDataset, deps: Deps) -> Dataset:
    """The dataset, if the caller reaches it, decided as `_reach` decides. Whether the caller
    needs a grant depends only on the region named, which must be the dataset's; for one who
    does, the grant of the purpose's job is read in the statement that reads the dataset, so a
    read under a grant costs no round trip more than the owner's."""
    name = f"regions/{q.region.value}/datasets/{q.dataset_id}"
    job = job_of_purpose(q.purpose) if policy.needs_grant(q.actor, q.region) else None
    async with deps.uow() as uow:
        if job:
            dataset, grant = await uow.repo.get_dataset_with_grant(q.dataset_id, job)
        else:
            dataset, grant = await uow.repo.get_dataset(q.dataset_id), None
    if dataset is None or dataset.region is not q.region:
        raise NotFound(f"dataset {name} not found")
    touch(name)
    reach = policy.reach(q.actor, dataset.region, grant, f"dataset {name}")
    reach.ensure_admits(dataset.job, f"dataset {name}")
    return dataset


async def list_datasets(q: commands.ListDatasets, deps: Deps) -> tuple[list[Dataset], bool]:
    """A page of datasets, newest first, and whether more follow. A grant holder lists the
    job's datasets only (a filter on another job finds none)."""
    async with deps.uow() as uow:
        if q.region is not None and policy.needs_grant(q.actor, q.region):
            reach = await _reach(uow, q.actor, q.region, q.purpose, f"regions/{q.region.value}")
            if q.job and not reach.admits(q.job):
                return [], False
            regions, job = [q.region], reach.job
        else:
            regions, job = policy.visible_regions(q.actor, q.region), q.job
        found = await uow.repo.list_datasets(regions, job, q.kind, q.page_size + 1, q.after)
    touch(*(d.name for d in found))
    return found[: q.page_size], len(found) > q.page_size


async def list_rejections(
    q: commands.ListRejections, deps: Deps
) -> tuple[Dataset, list[tuple[int, str, str]]]:
    dataset = await get_dataset(commands.GetDataset(q.actor, q.region, q.dataset_id, q.purpose), deps)
    return dataset, await asyncio.to_thread(deps.store.rejections, q.dataset_id, q.offset, q.page_size)


# ---------------------------------------------------------------- profiles


async def create_profile(cmd: commands.CreateMappingProfile, deps: Deps) -> MappingProfile:
    region, profile = cmd.region, cmd.profile
    policy.ensure_can_change(cmd.actor, region, f"regions/{region.value}")
    problems = Violations()
    for f, d in profile.problems():
        problems.add(f, d)
    if profile.profile_id in BUILTIN_PROFILES:
        problems.add("profile_id", "that is the name of a built-in profile")
    problems.raise_if_any()
    async with deps.uow() as uow:
        if not await uow.repo.add_profile(region, profile, cmd.actor.username, deps.clock()):
            raise AlreadyExists(f"mapping profile {profile.profile_id} already exists in {region.value}")
        await uow.commit()
    return profile


async def list_profiles(q: commands.ListMappingProfiles, deps: Deps) -> list[MappingProfile]:
    """The profiles an import into the region may use (a grant holder's too: column mappings,
    no intelligence)."""
    async with deps.uow() as uow:
        await _reach(uow, q.actor, q.region, q.purpose, f"regions/{q.region.value}")
        builtin = [p for p in BUILTIN_PROFILES.values() if q.kind in (None, p.kind)]
        return [*builtin, *await uow.repo.list_profiles(q.region, q.kind)]


# ---------------------------------------------------------------- scope of analyses


@dataclass(frozen=True)
class Resolved:
    """An analysis' datasets, their rows in its time window, and how far the caller reaches."""

    reach: policy.Reach
    datasets: list[Dataset]
    rows: pl.LazyFrame


async def resolve_scope(scope: Scope, kind: DatasetKind, deps: Deps) -> Resolved:
    """The datasets of the scope (those named, or every one of the region or of the scope's
    job) and their rows in its time window. Under a grant every dataset must be the job's."""
    what = f"regions/{scope.region.value}"
    async with deps.uow() as uow:
        reach = await _reach(uow, scope.actor, scope.region, scope.purpose, what)
        if scope.job:
            reach.ensure_admits(scope.job, what)
        everything = await uow.repo.list_datasets([scope.region], scope.job or reach.job, kind, ALL)
    if scope.dataset_ids:
        by_id = {d.id: d for d in everything}
        missing = [i for i in scope.dataset_ids if i not in by_id]
        if missing:
            unreached = OutOfScope if reach.under_grant else NotFound
            raise unreached(f"dataset regions/{scope.region.value}/datasets/{missing[0]} not found")
        chosen = [by_id[i] for i in scope.dataset_ids]
    else:
        chosen = everything
    touch(*(d.name for d in chosen))
    rows = deps.store.rows([d.id for d in chosen], kind)
    column = "start" if kind is DatasetKind.CDR else "time"
    return Resolved(reach, chosen, analysis.window(rows, column, scope.start, scope.end))


def whole_dataset_pairs(scope: Scope, chosen: list[Dataset], deps: Deps) -> pl.LazyFrame | None:
    """The chosen datasets' pair totals (written on import), when the time window holds every
    record of them; otherwise None and the analysis reads the records in the window."""
    start, end = scope.start, scope.end
    for d in chosen:
        if d.first_time is None or d.last_time is None:
            continue
        if start is not None and start > d.first_time:
            return None
        if end is not None and end <= d.last_time:
            return None
    return deps.store.pairs([d.id for d in chosen])


async def _call_data(
    scope: Scope, deps: Deps, *, pairs: bool = False
) -> tuple[Resolved, pl.LazyFrame | None]:
    """Call records in the scope and, when asked, the datasets' pair totals if the window holds
    all of them."""
    found = await resolve_scope(scope, DatasetKind.CDR, deps)
    return found, whole_dataset_pairs(scope, found.datasets, deps) if pairs else None


async def _labels(
    reach: policy.Reach, identifiers: list[str], deps: Deps, *, watchlists: bool = False
) -> Labels:
    """What the region knows of the identifiers of an answer. Under a grant: which of its
    watchlists hold those numbers (a finding about the job's data), never its attributions
    (whom a number belongs to is the region's knowledge, not the job's)."""
    if reach.under_grant and not watchlists:
        return Labels(reach.region)
    async with deps.uow() as uow:
        found = {} if reach.under_grant else await uow.repo.attributions(reach.region, identifiers)
        members = await uow.repo.members(reach.region) if watchlists else {}
    if reach.under_grant:
        wanted = {int(i[1:]) for i in identifiers if i.startswith("+")}
        members = {n: lists for n, lists in members.items() if n in wanted}
    return Labels(reach.region, found, members)


# ---------------------------------------------------------------- analyses of call data


async def get_contact_network(q: commands.GetContactNetwork, deps: Deps) -> Analysed[analysis.Network]:
    data, pairs = await _call_data(q.scope, deps, pairs=True)
    net = await asyncio.to_thread(
        analysis.contact_network,
        data.rows,
        q.targets,
        min_contacts=q.min_contacts,
        max_edges=q.max_edges,
        pairs=pairs,
    )
    return Analysed(net, await _labels(data.reach, [f"+{n}" for n in net.nodes], deps, watchlists=True))


async def find_common_contacts(
    q: commands.FindCommonContacts, deps: Deps
) -> Analysed[list[analysis.CommonContact]]:
    data, pairs = await _call_data(q.scope, deps, pairs=True)
    found = await asyncio.to_thread(
        analysis.common_contacts,
        data.rows,
        q.targets,
        min_targets=q.min_targets,
        include_targets=q.include_targets,
        limit=q.limit,
        pairs=pairs,
    )
    return Analysed(found, await _labels(data.reach, [f"+{c.number}" for c in found], deps))


async def rank_suspects(q: commands.RankSuspects, deps: Deps) -> Analysed[list[analysis.Suspect]]:
    data, pairs = await _call_data(q.scope, deps, pairs=True)
    found = await asyncio.to_thread(
        analysis.rank_suspects, data.rows, q.targets, limit=q.limit, max_degree=q.max_degree, pairs=pairs
    )
    return Analysed(found, await _labels(data.reach, [f"+{s.number}" for s in found], deps, watchlists=True))


async def get_target_profile(q: commands.GetTargetProfile, deps: Deps) -> Analysed[analysis.Profile]:
    data, _ = await _call_data(q.scope, deps)
    found = await asyncio.to_thread(analysis.target_profile, data.rows, q.target, top=q.top)
    return Analysed(found, await _labels(data.reach, [f"+{q.target}"], deps))


async def find_colocations(q: commands.FindColocations, deps: Deps) -> list[analysis.Colocation]:
    data, _ = await _call_data(q.scope, deps)
    return await asyncio.to_thread(
        analysis.colocations, data.rows, q.targets, window_seconds=q.window_seconds, limit=q.limit
    )


# ---------------------------------------------------------------- advert networks


async def find_advert_networks(q: commands.FindAdvertNetworks, deps: Deps) -> list[AdvertNetwork]:
    """Networks of the scope's adverts (authorised and audited as every analysis: the region's
    people, or a grant holder over the job's datasets only), joined also through the call data
    of the same reach, and ranked with the watchlists of the region that hold their numbers or
    numbers in contact with them (under a grant: only numbers in the job's data)."""
    whole = dataclasses.replace(q.scope, start=None, end=None)
    found = await resolve_scope(whole, DatasetKind.ADVERTS, deps)
    calls_scope = dataclasses.replace(whole, dataset_ids=q.call_dataset_ids)
    calls = await resolve_scope(calls_scope, DatasetKind.CDR, deps)
    pairs = deps.store.pairs([d.id for d in calls.datasets])
    start, end = q.scope.start, q.scope.end

    def gather() -> tuple[pl.DataFrame, pl.DataFrame]:
        adverts = analysis.window(found.rows, "posted", start, end).collect()
        totals = (pairs if pairs is not None else analysis.pair_totals(calls.rows)).collect()
        wanted = adverts.select(pl.col("number").unique())
        near = totals.join(wanted, left_on="x", right_on="number", how="semi").vstack(
            totals.join(wanted, left_on="y", right_on="number", how="semi")
        )
        contacts = near.unique(["x", "y"]).select(pl.col("x").alias("a"), pl.col("y").alias("b"), "contacts")
        return adverts, contacts

    adverts, contacts = await asyncio.to_thread(gather)
    numbers = set(adverts["number"].to_list()) | set(contacts["a"].to_list()) | set(contacts["b"].to_list())
    labels = await _labels(found.reach, [f"+{n}" for n in numbers], deps, watchlists=True)
    lists = {n: [name for name, _ in labels.lists(n)] for n in numbers if labels.lists(n)}
    touching: dict[int, list[int]] = {}
    for a, b in contacts.select("a", "b").iter_rows():
        if b in lists:
            touching.setdefault(a, []).append(b)
        if a in lists:
            touching.setdefault(b, []).append(a)
    # The region's lists holding an account the adverts name (under a grant: the job's adverts,
    # so only lists holding an account of the job's data are named).
    async with deps.uow() as uow:
        account_lists = await uow.repo.account_members(
            found.reach.region,
            adverts["account"].drop_nulls().unique().to_list() if "account" in adverts.columns else [],
        )
    job = q.scope.job or found.reach.job
    scope_name = advert_networks.network_scope(q.scope.region.value, job)
    networks = await asyncio.to_thread(
        advert_networks.find_networks,
        adverts,
        contacts=contacts,
        watchlists=lists,
        watch_contacts=touching,
        account_watchlists=account_lists,
        min_adverts=q.min_adverts,
        min_numbers=q.min_numbers,
        scope=scope_name,
    )
    networks = networks[: q.limit]
    # The ids the imports stored (of the job's adverts only, for a job's answer).
    async with deps.uow() as uow:
        known = await uow.repo.advert_network_ids(
            q.scope.region, job or None, [a for n in networks for a in n.adverts]
        )
    advert_networks.settle_ids(networks, known)
    return networks


# ---------------------------------------------------------------- analyses of ANPR reads


async def find_convoys(q: commands.FindConvoys, deps: Deps) -> list[analysis.Convoy]:
    data = await resolve_scope(q.scope, DatasetKind.ANPR, deps)
    return await asyncio.to_thread(
        analysis.convoys,
        data.rows,
        window_seconds=q.window_seconds,
        min_occasions=q.min_occasions,
        vrms=q.vrms or None,
        limit=q.limit,
    )


async def get_travel_pattern(q: commands.GetTravelPattern, deps: Deps) -> Analysed[analysis.TravelPattern]:
    data = await resolve_scope(q.scope, DatasetKind.ANPR, deps)
    found = await asyncio.to_thread(
        analysis.travel_pattern, data.rows, q.vrm, max_hop_seconds=q.max_hop_seconds
    )
    return Analysed(found, await _labels(data.reach, [q.vrm], deps))


# ---------------------------------------------------------------- phone index


@dataclass
class IndexHit:
    number: str
    entries: list[dict[str, Any]]
    attributions: list[Attribution]
    # The watchlists of `region` (the one asked about, or the caller's own) holding the number.
    region: Region
    watchlists: list[tuple[str, WatchlistKind]]
    advert_datasets: list[str]


async def search_index(q: commands.SearchPhoneIndex, deps: Deps) -> IndexHit:
    try:
        key = parse_number_key(q.number)
    except BadIdentifier as exc:
        raise InvalidArgument.field("number", str(exc)) from None
    own = q.region or q.actor.region
    async with deps.uow() as uow:
        if q.region is not None and policy.needs_grant(q.actor, q.region):
            # A holder searches the job's data; what the region knows of the number (its
            # attributions, its watchlists) only as far as the job's data holds the number.
            reach = await _reach(uow, q.actor, q.region, q.purpose, f"regions/{q.region.value}")
            regions: list[Region] | None = [q.region]
        else:
            reach, regions = policy.Reach(own), policy.visible_regions(q.actor, q.region)
        cdr = await uow.repo.list_datasets(regions, reach.job, DatasetKind.CDR, ALL)
        adverts = await uow.repo.list_datasets(regions, reach.job, DatasetKind.ADVERTS, ALL)
        attributions = [] if reach.under_grant else await _attributions_of(uow, own, f"+{key}")
        lists = [] if reach.under_grant else (await uow.repo.members(own)).get(key, [])
    names = {d.id: d.name for d in cdr}

    def scan() -> tuple[list[dict[str, Any]], list[str]]:
        hits = deps.store.numbers(list(names)).filter(pl.col("number") == key).collect()
        in_adverts = [
            d.name
            for d in adverts
            if deps.store.rows([d.id], DatasetKind.ADVERTS)
            .filter(pl.col("number") == key)
            .head(1)
            .collect()
            .height
        ]
        return [{**r, "dataset": names[r["dataset_id"]]} for r in hits.iter_rows(named=True)], in_adverts

    entries, in_adverts = await asyncio.to_thread(scan)
    if reach.under_grant and (entries or in_adverts):
        async with deps.uow() as uow:
            lists = (await uow.repo.members(own)).get(key, [])
    touch(*(e["dataset"] for e in entries))
    return IndexHit(f"+{key}", entries, attributions, own, lists, in_adverts)


async def _attributions_of(uow: CommsUnitOfWork, region: Region, identifier: str) -> list[Attribution]:
    return (await uow.repo.attributions(region, [identifier])).get(identifier, [])


async def list_phone_index(q: commands.ListPhoneIndex, deps: Deps) -> tuple[list[dict[str, Any]], bool]:
    """A page of the index (numbers after `q.after`, in order) and whether more follow."""
    found = await resolve_scope(q.scope, DatasetKind.CDR, deps)
    rows = await _index_rows(found.datasets, q.after, q.page_size + 1, deps)
    return rows[: q.page_size], len(rows) > q.page_size


async def _index_rows(chosen: list[Dataset], after: int, limit: int, deps: Deps) -> list[dict[str, Any]]:
    """The phone index of the `chosen` datasets, numbers after `after`."""

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


async def attribute(cmd: commands.AttributeIdentifier, deps: Deps) -> Attribution:
    policy.ensure_can_change(cmd.actor, cmd.region, f"regions/{cmd.region.value}")
    problems = Violations()
    normal = ""
    try:
        normal = normalise_vrm(cmd.identifier) if cmd.vehicle else f"+{parse_number_key(cmd.identifier)}"
    except BadIdentifier as exc:
        problems.add("identifier", str(exc))
    if not cmd.entity_id.strip():
        problems.add("entity_id", "say which entity the identifier belongs to")
    problems.raise_if_any()
    found = Attribution(
        normal, cmd.entity_id.strip(), cmd.label.strip(), "manual", cmd.actor.username, deps.clock()
    )
    async with deps.uow() as uow:
        await uow.repo.attribute(cmd.region, found)
        await uow.commit()
    return found


# ---------------------------------------------------------------- watchlists and adverts


async def create_watchlist(cmd: commands.CreateWatchlist, deps: Deps) -> Watchlist:
    policy.ensure_can_change(cmd.actor, cmd.region, f"regions/{cmd.region.value}")
    if not PROFILE_ID.match(cmd.watchlist_id):
        raise InvalidArgument.field(
            "watchlist_id", "lower-case letters, digits and hyphens, starting with a letter"
        )
    watchlist = Watchlist(
        cmd.region,
        cmd.watchlist_id,
        cmd.display_name or cmd.watchlist_id,
        cmd.kind,
        cmd.actor.username,
        deps.clock(),
    )
    async with deps.uow() as uow:
        if not await uow.repo.add_watchlist(watchlist):
            raise AlreadyExists(f"watchlist {watchlist.name} already exists")
        await uow.commit()
    touch(watchlist.name)
    return watchlist


async def add_watchlist_numbers(
    cmd: commands.AddWatchlistNumbers, deps: Deps
) -> tuple[Watchlist, list[WatchlistContact]]:
    """Add numbers to a list, and find the contacts they make with numbers of other lists in
    the region's call data (each new one stored and published)."""
    region, watchlist_id = cmd.region, cmd.watchlist_id
    name = f"regions/{region.value}/watchlists/{watchlist_id}"
    policy.ensure_can_change(cmd.actor, region, name)
    problems = Violations()
    keys: list[int] = []
    for i, raw in enumerate(cmd.numbers):
        try:
            keys.append(parse_number_key(raw))
        except BadIdentifier as exc:
            problems.add(f"numbers[{i}]", str(exc))
    accounts: list[str] = []
    for i, raw in enumerate(cmd.accounts):
        try:
            accounts.append(parse_account(raw).key)
        except AccountError as exc:
            problems.add(f"accounts[{i}]", str(exc))
    if not cmd.numbers and not cmd.accounts:
        problems.add("numbers", "give at least one number or account")
    problems.raise_if_any()
    async with deps.uow() as uow:
        lists = await uow.repo.list_watchlists(region, watchlist_id)
        if not lists:
            raise NotFound(f"watchlist {name} not found")
        await uow.repo.add_numbers(region, watchlist_id, keys)
        await uow.repo.add_accounts(region, watchlist_id, accounts)
        await uow.commit()
        members = await uow.repo.members(region)
        datasets = await uow.repo.list_datasets([region], "", DatasetKind.CDR, ALL)
    touch(name)
    new_contacts: list[WatchlistContact] = []
    now = deps.clock()
    for dataset in datasets:
        rows = deps.store.rows([dataset.id])
        found = await asyncio.to_thread(detection.watchlist_contacts, rows, dataset, members, now)
        if not found:
            continue
        async with deps.uow() as uow:
            new_contacts.extend(await _record_contacts(uow, dataset, found))
            await uow.commit()
    async with deps.uow() as uow:
        watchlist = (await uow.repo.list_watchlists(region, watchlist_id))[0]
    return watchlist, new_contacts


async def list_watchlists(q: commands.ListWatchlists, deps: Deps) -> list[Watchlist]:
    policy.ensure_visible(q.actor, q.region, f"regions/{q.region.value}")
    async with deps.uow() as uow:
        found = await uow.repo.list_watchlists(q.region)
    touch(*(w.name for w in found))
    return found


async def list_watchlist_contacts(q: commands.ListWatchlistContacts, deps: Deps) -> list[WatchlistContact]:
    """The region's watchlist contacts, newest first; a grant holder's, those found in the
    job's datasets."""
    async with deps.uow() as uow:
        reach = await _reach(uow, q.actor, q.region, q.purpose, f"regions/{q.region.value}")
        found = await uow.repo.list_contacts(q.region, q.limit, reach.job)
    touch(*(c.name for c in found))
    return found


async def list_flags(q: commands.ListAdvertFlags, deps: Deps) -> list[AdvertFlag]:
    """The advert flags of a dataset, or of every one of the region. A grant holder sees the
    flags of the job's datasets, each as far as the job's call data supports it."""
    async with deps.uow() as uow:
        reach = await _reach(uow, q.actor, q.region, q.purpose, f"regions/{q.region.value}")
        if not reach.under_grant:
            return await uow.repo.list_flags(q.region, q.dataset_id)
        of_job = await uow.repo.list_datasets([q.region], reach.job, None, ALL)
        if q.dataset_id and q.dataset_id not in {d.id for d in of_job}:
            raise OutOfScope(f"dataset regions/{q.region.value}/datasets/{q.dataset_id} not found")
        flags = await uow.repo.list_flags(q.region, q.dataset_id, reach.job)
    job_cdr = [d.name for d in of_job if d.kind is DatasetKind.CDR]
    return [seen for f in flags if (seen := f.within(job_cdr)) is not None]


# ---------------------------------------------------------------- exports


async def export(q: commands.Export, deps: Deps) -> ExportFile:
    """The export written to a file of the dataset store's."""
    if q.format.is_advert_networks:
        if q.advert_networks is None:
            raise InvalidArgument.field("advert_networks", "say which advert networks to export")
        networks = await find_advert_networks(q.advert_networks, deps)
        fmt = q.format
        write: Callable[[Path], None] = lambda path: deps.exporter.advert_networks(networks, fmt, path)  # noqa: E731
    elif q.format.is_network:
        write = await _network_export(q, deps)
    else:
        write = await _index_export(q, deps)
    path = deps.store.export_file()
    try:
        await asyncio.to_thread(write, path)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    filename, content_type = EXPORT_FILES[q.format]
    return ExportFile(path, filename, content_type)


async def _network_export(q: commands.Export, deps: Deps) -> Callable[[Path], None]:
    data, pairs = await _call_data(q.scope, deps, pairs=True)
    net = await asyncio.to_thread(
        analysis.contact_network, data.rows, q.targets, min_contacts=q.min_contacts, pairs=pairs
    )
    labels = await _labels(data.reach, [f"+{n}" for n in net.nodes], deps)
    names = {int(k[1:]): v[0].label or v[0].entity_id for k, v in labels.attributions.items() if v}
    return lambda path: deps.exporter.network(net, names, q.format, path)


async def _index_export(q: commands.Export, deps: Deps) -> Callable[[Path], None]:
    found = await resolve_scope(q.scope, DatasetKind.CDR, deps)
    rows = await _index_rows(found.datasets, 0, 10_000_000, deps)
    labels = await _labels(found.reach, [f"+{r['number']}" for r in rows], deps)
    table = [
        (
            f"+{r['number']}",
            "; ".join(a.label or a.entity_id for a in labels.of(f"+{r['number']}")),
            r["events"],
            r["calls"],
            r["sms"],
            r["duration"],
            r["first"].isoformat() if r["first"] else "",
            r["last"].isoformat() if r["last"] else "",
        )
        for r in rows
    ]
    return lambda path: deps.exporter.index(table, q.format, path)


# ---------------------------------------------------------------- events consumed


async def on_job_created(
    job_name: str, region: Region, job_type: str, handling: Handling, operation: str, uow: CommsUnitOfWork
) -> None:
    """Remember comms and ANPR jobs: their handling code becomes the default of their datasets."""
    if job_type not in ("comms_analysis", "anpr"):
        return
    await uow.repo.upsert_job(KnownJob(job_name, region, job_type, handling, operation))


async def on_record_linked(
    region: Region,
    entity_id: str,
    record: str,
    numbers: list[str],
    vrms: list[str],
    decided_by: str,
    at: datetime,
    uow: CommsUnitOfWork,
) -> None:
    """Attribute the phone numbers and vehicles of a record resolved to an entity, noting the
    record (so that they follow it when the entity is split). A link delivered after a merge or
    split applied here that moved its entity or record on lands where that change put the rest."""
    entity, via = await identity.placed(uow, region, entity_id, record, at)
    identifiers: list[str] = []
    for raw in numbers:
        try:
            identifiers.append(f"+{parse_number_key(raw)}")
        except BadIdentifier:
            continue
    for raw in vrms:
        try:
            identifiers.append(normalise_vrm(raw))
        except BadIdentifier:
            continue
    for identifier in dict.fromkeys(identifiers):
        await uow.repo.attribute(
            region,
            Attribution(
                identifier, entity, "", "entity-resolution", decided_by, at, record=record, via_change=via
            ),
        )
