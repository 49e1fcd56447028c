"""One handler per command. Handlers decide; the unit of work commits; nothing here knows gRPC."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Callable, Iterable
from contextlib import aclosing
from dataclasses import dataclass, field, replace
from datetime import datetime
from importlib import resources

from toex_common.context import touch
from toex_common.uow import request_scope
from toex_kernel.clock import Clock, utcnow
from toex_kernel.collector import collector_paused
from toex_kernel.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    OutOfScope,
    PermissionDenied,
    Violations,
)
from toex_kernel.grants import JobGrant, job_of
from toex_kernel.pacing import Pacer
from toex_kernel.principal import Principal
from toex_kernel.regions import Region

from toex_entity.domain import commands, matching, normalise, policy
from toex_entity.domain.events import EntitiesMerged, EntitySplit
from toex_entity.domain.matching import MatchModel
from toex_entity.domain.model import (
    ChangeKind,
    Entity,
    EntityChange,
    EntityState,
    Explanation,
    LinkMethod,
    Move,
    Outcome,
    PairDecision,
    PairVerdict,
    ResolveResult,
    ReviewState,
    ReviewTask,
    entity_name,
    new_id,
    pair_key,
)
from toex_entity.domain.records import (
    Address,
    PersonData,
    RecordType,
    SourceRecord,
    content_hash,
    identifiers_of,
    record_name,
)
from toex_entity.domain.relations import (
    MAX_DEPTH,
    MAX_NODES,
    GraphNode,
    Neighbourhood,
    StoredRelation,
    key_node,
)
from toex_entity.service_layer import resolver
from toex_entity.service_layer.foreground import Foreground
from toex_entity.service_layer.ports import EntityLink, EntityUnitOfWork

log = logging.getLogger(__name__)
MAX_REASON = 2000
MAX_SOURCE_TEXT = 200
# Records per transaction when a stream is resolved.
INGEST_CHUNK = 2000


def default_model() -> MatchModel:
    """The model shipped with the service (estimated by Splink on generated records), used
    until `python -m toex_entity train-model` estimates one from the stored records."""
    text = resources.files("toex_entity").joinpath("default_model.json").read_text()
    return MatchModel.from_json(json.loads(text))


@dataclass
class ModelStore:
    model: MatchModel | None = None

    async def current(self, uow: EntityUnitOfWork) -> MatchModel:
        if self.model is None:
            self.model = await uow.repo.active_model() or default_model()
        return self.model


@dataclass
class Deps:
    uow: Callable[[], EntityUnitOfWork]
    models: ModelStore = field(default_factory=ModelStore)
    clock: Clock = utcnow
    contact_role: Callable[[Region], str] = policy.contact_role
    # Resolution stops this replica's background estimate while it runs (foreground.py).
    foreground: Foreground = field(default_factory=Foreground)


# --- validation -----------------------------------------------------------------------


def build_record(
    item: commands.IncomingRecord, actor: Principal, now: datetime, prefix: str = "record", job: str = ""
) -> SourceRecord:
    """Validate and normalise one submitted record, attached to `job` (of its region, "" for
    none). Raises InvalidArgument listing every problem."""
    problems = Violations()
    system = item.source_system.strip()
    source_id = item.source_record_id.strip()
    if not system or len(system) > MAX_SOURCE_TEXT:
        problems.add(f"{prefix}.ref.source_system", "name the source system (at most 200 characters)")
    if not source_id or len(source_id) > MAX_SOURCE_TEXT:
        problems.add(
            f"{prefix}.ref.source_record_id", "give the record's id in its source (at most 200 characters)"
        )
    if item.content is None or item.record_type is None:
        problems.add(f"{prefix}.content", "set exactly one of person, phone, vehicle, online_account, email")
    if item.grading.source_evaluation == 0:
        problems.add(f"{prefix}.grading.source_evaluation", "grade the source 1, 2 or 3")
    if not item.grading.assessment:
        problems.add(f"{prefix}.grading.intelligence_assessment", "assess the intelligence A to E")
    problems.raise_if_any()
    assert item.content is not None and item.record_type is not None
    content = item.content
    if isinstance(content, PersonData):
        if not (content.surname or content.given_name or content.birth_date or content.identifiers):
            problems.add(f"{prefix}.person", "a person record needs a name, a date of birth or an identifier")
        try:
            normalise.birth_date(content.birth_date)
        except normalise.NormaliseError as exc:
            problems.add(f"{prefix}.person.birth_date", str(exc))
    try:
        identifiers = identifiers_of(item.record_type, content)
    except normalise.NormaliseError as exc:
        problems.add(f"{prefix}.content", str(exc))
    problems.raise_if_any()
    features = None
    if isinstance(content, PersonData):
        content = _normalised_person(content)
        features = matching.person_features(content, identifiers.official_ids, identifiers.e164_numbers)
    return SourceRecord(
        id=new_id(),
        region=item.region,
        source_system=system,
        source_record_id=source_id,
        record_type=item.record_type,
        grading=item.grading,
        content=content,
        identifiers=identifiers,
        ingested_at=now,
        ingested_by=actor.username,
        content_hash=content_hash(item.record_type, content, item.grading),
        features=features,
        job=job,
    )


def _normalised_person(p: PersonData) -> PersonData:
    birth_date = normalise.birth_date(p.birth_date)
    postcodes = [normalise.postcode(a.postcode) for a in p.addresses]
    if birth_date == p.birth_date and postcodes == [a.postcode for a in p.addresses]:
        return p  # already in normal form (most records of a bulk load): nothing to copy
    return replace(
        p,
        birth_date=birth_date,
        addresses=tuple(
            Address(a.lines, a.town, postcode) for a, postcode in zip(p.addresses, postcodes, strict=True)
        ),
    )


# --- job grants -----------------------------------------------------------------------


class _Access:
    """The caller and the call's purpose, and the grant of the job the purpose names: read at most
    once per call, and only when it could change an answer (policy.grant_job), so a caller who
    sees the region never reads it."""

    def __init__(self, actor: Principal, purpose: str = "") -> None:
        self.actor = actor
        self.purpose = purpose
        self._read = False
        self._grant: JobGrant | None = None

    async def grant(self, uow: EntityUnitOfWork, regions: Iterable[Region] | None) -> JobGrant | None:
        """The grant that could reach material of `regions` (None: of any region) hidden from
        the caller."""
        job = policy.grant_job(self.actor, self.purpose, regions)
        if not job:
            return None
        if not self._read:
            self._grant = await uow.grants.of_job(job)
            self._read = True
        return self._grant


@dataclass
class _Sight:
    """What the caller may see of one entity: its records, those visible to them, the grant they
    are seen under (if any), and whether the entity is a subject of that grant's job."""

    records: list[SourceRecord]
    visible: list[SourceRecord]
    grant: JobGrant | None = None
    subject: bool = False

    @property
    def seen(self) -> bool:
        return bool(self.visible) or self.subject


async def _sight(
    uow: EntityUnitOfWork,
    access: _Access,
    entity_id: str,
    merged: list[str] | None = None,
    records: list[SourceRecord] | None = None,
) -> _Sight:
    """`merged`: the ids redirecting to the entity, and `records`: its records, when the caller
    has them already."""
    if records is None:
        records = await uow.repo.records_of([entity_id])
    actor = access.actor
    visible = [r for r in records if policy.sees(actor, r.region)]
    if len(visible) == len(records):
        return _Sight(records, visible)
    # A grant adds the job's records of a region the caller does not see; to an entity of which
    # they see nothing, it may add itself too, as the job's subject, whoever holds its records.
    hidden = None if not visible else {r.region for r in records if not policy.sees(actor, r.region)}
    grant = await access.grant(uow, hidden)
    if grant is None:
        return _Sight(records, visible)
    visible = [r for r in records if policy.sees_record(actor, r, grant)]
    subject = False
    if not visible and policy.reads_under(actor, grant):
        ids = [entity_id, *(merged if merged is not None else await uow.repo.merged_ids(entity_id))]
        named = await uow.repo.is_job_subject(grant.job, grant.region, ids)
        subject = policy.sees_as_subject(actor, grant, named)
    return _Sight(records, visible, grant, subject)


# --- resolution -----------------------------------------------------------------------


def _scope(method: str, actor: Principal) -> str:
    return request_scope("entity", method, actor.subject)


async def resolve_records(cmd: commands.ResolveRecords, deps: Deps) -> list[ResolveResult]:
    """Resolve submitted records in order. With `single`, a bad record raises; otherwise it
    gets a result with `error` and the rest go on. The replica's background estimate is stopped
    meanwhile (`deps.foreground`)."""
    # The cyclic collector is paused meanwhile: a bulk chunk makes a few containers per
    # candidate pair and per row written and no cycles to collect, and the collector's passes
    # over them were a fifth of a bulk ingest's time (bench/results/entity-ingest.md).
    with deps.foreground.resolving(), collector_paused():
        return await _resolve_records(cmd, deps)


async def _resolve_records(cmd: commands.ResolveRecords, deps: Deps) -> list[ResolveResult]:
    now = deps.clock()
    regions = {r.region for r in cmd.records}
    grant = None
    if policy.grant_job(cmd.actor, cmd.purpose, regions):
        async with deps.uow() as uow:
            grant = await _Access(cmd.actor, cmd.purpose).grant(uow, regions)
    for region in regions:
        policy.ensure_can_submit(cmd.actor, region, grant)
    jobs = {region: job_of(cmd.purpose, region) for region in regions}
    results: list[ResolveResult | None] = [None] * len(cmd.records)
    scope = _scope("ResolveRecord", cmd.actor)
    # Closed on leaving (a replayed request returns early): the validation ahead stops too.
    async with aclosing(_Validation(cmd, jobs, now, results).chunks()) as chunks:
        async for chunk in chunks:
            async with deps.uow() as uow:
                if cmd.idempotency is not None:
                    prior = await uow.recall_request(
                        scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint
                    )
                    if prior is not None:
                        replay = await _replayed(uow, prior)
                        if replay.explanation is not None:
                            replay.hidden = await _hidden_names(uow, cmd.actor, grant, replay.explanation)
                        return [replay]
                resolved = await resolve_in(uow, [r for _, r in chunk], cmd.actor, deps, now, grant)
                for (index, _), result in zip(chunk, resolved, strict=True):
                    results[index] = result
                if cmd.single:
                    for result in resolved:
                        if result.error:
                            raise PermissionDenied(result.error)
                        if result.explanation is not None:
                            result.hidden = await _hidden_names(uow, cmd.actor, grant, result.explanation)
                if cmd.idempotency is not None and results[0] is not None:
                    first = results[0]
                    await uow.remember_request(
                        scope,
                        cmd.idempotency.request_id,
                        cmd.idempotency.fingerprint,
                        f"{first.record_id}#{first.outcome.value}",
                    )
                await uow.commit()
    touch(*{f"regions/{r.region.value}" for r in cmd.records})
    named = [r for r in results if r is not None and r.record_id]
    touch(*(entity_name(r.entity_id) for r in named[:200]))
    return [r for r in results if r is not None]


class _Validation:
    """The submitted records validated and normalised (`build_record`) in chunks of
    INGEST_CHUNK submitted records. With more than one chunk, the chunks after the first are
    validated in the background, half a millisecond at a time (toex_kernel.pacing) whenever
    resolution waits on the database, so their CPU overlaps the database's work (bench/results/entity-ingest.md). A
    record that fails gets its error in `results`; with `single`, its error is raised."""

    def __init__(
        self,
        cmd: commands.ResolveRecords,
        jobs: dict[Region, str],
        now: datetime,
        results: list[ResolveResult | None],
    ) -> None:
        self.cmd, self.jobs, self.now, self.results = cmd, jobs, now, results

    async def chunks(self) -> AsyncGenerator[list[tuple[int, SourceRecord]], None]:
        size = len(self.cmd.records)
        if size <= INGEST_CHUNK:
            chunk = await self._validate(0, size, pause=False)
            if chunk:
                yield chunk
            return
        # One chunk waits ready at most: the next is validated from when the one before it is
        # taken, so its work falls in that chunk's first waits (the lock, the candidate lookup).
        ready: asyncio.Queue[list[tuple[int, SourceRecord]] | BaseException | None] = asyncio.Queue(1)
        ahead = asyncio.get_running_loop().create_task(self._produce(ready))
        try:
            while (item := await ready.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if item:
                    yield item
        finally:
            ahead.cancel()

    async def _produce(
        self, ready: asyncio.Queue[list[tuple[int, SourceRecord]] | BaseException | None]
    ) -> None:
        try:
            for start in range(0, len(self.cmd.records), INGEST_CHUNK):
                await ready.put(await self._validate(start, min(start + INGEST_CHUNK, len(self.cmd.records))))
        except Exception as exc:
            await ready.put(exc)
            return
        await ready.put(None)

    async def _validate(self, start: int, end: int, *, pause: bool = True) -> list[tuple[int, SourceRecord]]:
        cmd, chunk, pacer = self.cmd, [], Pacer()
        for index in range(start, end):
            item = cmd.records[index]
            try:
                chunk.append((index, build_record(item, cmd.actor, self.now, job=self.jobs[item.region])))
            except InvalidArgument as exc:
                if cmd.single:
                    raise
                self.results[index] = ResolveResult("", "", Outcome.UNCHANGED, error=exc.message)
            if pause:
                await pacer.give_way()  # resolution goes on as soon as its answer is in
        return chunk


async def resolve_in(
    uow: EntityUnitOfWork,
    records: list[SourceRecord],
    actor: Principal,
    deps: Deps,
    now: datetime,
    grant: JobGrant | None = None,
) -> list[ResolveResult]:
    """Resolve validated records inside the caller's unit of work (which commits). `grant`: the
    job grant the caller submits under, if any (a re-sent record must be the job's)."""
    await uow.lock_resolution()
    model = await deps.models.current(uow)
    ctx = resolver.Context(
        model, deps.contact_role, actor.username, now, explain_kept_apart=len(records) == 1
    )
    fresh, known = await _split_known(uow, records, now, actor, grant, deps)
    resolved = iter(await resolver.resolve_batch(uow, fresh, ctx)) if fresh else iter(())
    return [k if k is not None else next(resolved) for k in known]


async def _replayed(uow: EntityUnitOfWork, prior: str) -> ResolveResult:
    record_id, _, outcome = prior.partition("#")
    found = await uow.repo.get_records([record_id])
    if record_id not in found:
        raise NotFound(f"record {record_id} not found")
    link = (await uow.repo.links_of([record_id])).get(record_id)
    explanation = Explanation.from_json(link.explanation) if link and link.explanation else None  # type: ignore[arg-type]
    record = found[record_id]
    return ResolveResult(
        record_id, record.entity_id, Outcome(outcome), explanation, region=record.region.value
    )


async def _hidden_names(
    uow: EntityUnitOfWork, actor: Principal, grant: JobGrant | None, explanation: Explanation
) -> tuple[str, ...]:
    """The records an explanation compares that the caller may not see (their names and values
    are left out of what they are told)."""
    hidden: list[str] = []
    for name in (explanation.record_a, explanation.record_b):
        if not name.startswith("regions/"):
            continue
        region = Region.parse(name.split("/")[1])
        if policy.sees(actor, region):
            continue
        if grant is not None:
            record_id = name.rsplit("/", 1)[-1]
            record = (await uow.repo.get_records([record_id])).get(record_id)
            if record is not None and policy.sees_record(actor, record, grant):
                continue
        hidden.append(name)
    return tuple(hidden)


async def _split_known(
    uow: EntityUnitOfWork,
    records: list[SourceRecord],
    now: datetime,
    actor: Principal,
    grant: JobGrant | None,
    deps: Deps,
) -> tuple[list[SourceRecord], list[ResolveResult | None]]:
    """Records already stored (same region, source system and source id) are not resolved
    again: an identical one changes nothing; a changed one updates the stored record and its
    index keys and stays in its entity. A caller who may not see the stored record (under a
    grant, one outside the job) gets an error for it, and it is left as it is."""
    existing = await uow.repo.find_existing(
        [(r.region, r.source_system, r.source_record_id) for r in records]
    )
    fresh: list[SourceRecord] = []
    out: list[ResolveResult | None] = []
    seen: dict[tuple[Region, str, str], SourceRecord] = {}
    for record in records:
        key = (record.region, record.source_system, record.source_record_id)
        stored = existing.get(key) or seen.get(key)
        if stored is None:
            seen[key] = record
            fresh.append(record)
            out.append(None)
            continue
        if not policy.works_record(actor, stored, grant):
            out.append(
                ResolveResult(
                    "",
                    "",
                    Outcome.UNCHANGED,
                    error=policy.held_outside_job(stored, grant, deps.contact_role(stored.region)),
                    region=stored.region.value,
                )
            )
            continue
        if stored.content_hash != record.content_hash and key in existing:
            record.id = stored.id
            record.entity_id = stored.entity_id
            await uow.repo.update_record(record)
            await uow.repo.replace_keys(record.id, resolver.index_keys(stored), resolver.index_keys(record))
        out.append(ResolveResult(stored.id, stored.entity_id, Outcome.UNCHANGED, region=stored.region.value))
    return fresh, out


# --- reading entities -----------------------------------------------------------------


@dataclass
class EntityView:
    entity: Entity
    requested_id: str
    records: list[SourceRecord]
    links: dict[str, EntityLink]
    other_regions: list[Region]
    merged_ids: list[str]
    history: list[EntityChange]
    # Part of the entity is hidden from the caller, or the caller reads it under a job grant:
    # its history is told without who decided, why or which other entities (policy).
    partial: bool = False
    relations: list[StoredRelation] = field(default_factory=list)


async def _root(uow: EntityUnitOfWork, entity_id: str) -> Entity | None:
    entity = await uow.repo.get_entity(entity_id)
    hops = 0
    while entity is not None and entity.state is EntityState.MERGED and entity.merged_into and hops < 100:
        entity = await uow.repo.get_entity(entity.merged_into)
        hops += 1
    return entity


async def _relations_seen(uow: EntityUnitOfWork, access: _Access, entity_id: str) -> list[StoredRelation]:
    """The entity's relations the caller may see: said by records of a region they see, and,
    when the other end is an entity, one they may see too (as GetEntity would decide it), so
    nothing of an entity hidden from them (not even its id) is shown."""
    shown: list[StoredRelation] = []
    seen: dict[str, bool] = {}
    for stored in await uow.relations.relations_touching(entity_id):
        if not policy.sees(access.actor, Region(stored.relation.region)):
            continue
        if not stored.keyed:
            other = stored.other_end(entity_id)
            if other not in seen:
                seen[other] = (await _sight(uow, access, other)).seen
            if not seen[other]:
                continue
        shown.append(stored)
    return shown


async def _view(uow: EntityUnitOfWork, access: _Access, entity_id: str) -> EntityView:
    name = entity_name(entity_id)
    entity = await _root(uow, entity_id)
    if entity is None:
        raise NotFound(f"entity {name} not found")
    merged = await uow.repo.merged_ids(entity.id)
    held, links = await uow.repo.records_for_view([entity.id])
    sight = await _sight(uow, access, entity.id, merged, held)
    visible = sight.visible
    touch(name, entity.name, *(r.name for r in visible))
    if not sight.seen:
        raise OutOfScope(f"entity {name} not found")
    # Deconfliction: the regions holding records the caller may not see (under a grant, the
    # job's region too when it holds records outside the job), never what they hold.
    shown = {r.id for r in visible}
    others = sorted({r.region for r in sight.records if r.id not in shown})
    history = await uow.repo.changes_of([entity.id, *merged])
    return EntityView(
        entity=entity,
        requested_id=entity_id,
        records=visible,
        links={r.id: links[r.id] for r in visible if r.id in links},
        other_regions=others,
        merged_ids=merged,
        history=history,
        partial=bool(others) or sight.grant is not None,
        relations=await _relations_seen(uow, access, entity.id),
    )


async def get_entity(cmd: commands.GetEntity, deps: Deps) -> EntityView:
    async with deps.uow() as uow:
        return await _view(uow, _Access(cmd.actor, cmd.purpose), cmd.entity_id)


async def get_neighbourhood(cmd: commands.GetNeighbourhood, deps: Deps) -> Neighbourhood:
    """Breadth first from the entity, following only the relations GetEntity would show the
    caller (so every node reached is one they may see), through accounts and addresses too
    (two people holding one account are two steps apart)."""
    problems = Violations()
    if not 1 <= cmd.depth <= MAX_DEPTH:
        problems.add("depth", f"1 to {MAX_DEPTH}")
    if not 1 <= cmd.max_nodes <= MAX_NODES:
        problems.add("max_nodes", f"1 to {MAX_NODES}")
    problems.raise_if_any()
    access = _Access(cmd.actor, cmd.purpose)
    async with deps.uow() as uow:
        start = await _view(uow, access, cmd.entity_id)
        root = start.entity
        label = start.records[0].label() if start.records else ""
        nodes = {root.id: GraphNode(root.id, root.entity_type.value, label, 0)}
        edges: dict[tuple[str, str, str, str, str, str], StoredRelation] = {}
        frontier, truncated = [root.id], False
        for depth in range(1, cmd.depth + 1):
            reached: list[str] = []
            for node_id in frontier:
                for stored in await _relations_seen(uow, access, node_id):
                    other = stored.other_end(node_id)
                    if other not in nodes:
                        if len(nodes) >= cmd.max_nodes:
                            truncated = True
                            continue
                        nodes[other] = await _node(uow, access, other, depth)
                        reached.append(other)
                    r = stored.relation
                    edges.setdefault(
                        (r.region, r.kind.value, r.subject, r.target, r.source_system, r.source_record_id),
                        stored,
                    )
            frontier = reached
    return Neighbourhood(list(nodes.values()), list(edges.values()), truncated)


async def _node(uow: EntityUnitOfWork, access: _Access, node_id: str, depth: int) -> GraphNode:
    if node_id.startswith(("addr:", "bank:")):
        return key_node(node_id, depth)
    entity = await uow.repo.get_entity(node_id)
    sight = await _sight(uow, access, node_id)
    label = sight.visible[0].label() if sight.visible else ""
    # Every entity the caller is shown goes in the audit record, with the records labelling it.
    touch(entity_name(node_id), *(r.name for r in sight.visible))
    return GraphNode(node_id, entity.entity_type.value if entity else "", label, depth)


async def search_entities(
    cmd: commands.SearchEntities, deps: Deps
) -> tuple[list[tuple[EntityView, float]], bool]:
    problems = Violations()
    keys: list[str] = []
    if cmd.phone_number.strip():
        try:
            keys.append(f"tel:{normalise.phone_e164(cmd.phone_number)}")
        except normalise.NormaliseError as exc:
            problems.add("phone_number", str(exc))
    if cmd.vrm.strip():
        try:
            keys.append(f"vrm:{normalise.vrm(cmd.vrm)}")
        except normalise.NormaliseError as exc:
            problems.add("vrm", str(exc))
    if cmd.email.strip():
        try:
            keys.append(f"email:{normalise.email(cmd.email)}")
        except normalise.NormaliseError as exc:
            problems.add("email", str(exc))
    if cmd.handle.strip():
        platform, _, handle = cmd.handle.strip().rpartition(":")
        try:
            if platform:
                keys.append(f"handle:{normalise.handle(platform, handle)}")
            else:
                keys.append(f"handle-any:{normalise.fold(handle).removeprefix('@')}")
        except normalise.NormaliseError as exc:
            problems.add("handle", str(exc))
    query: PersonData | None = None
    if cmd.name.strip():
        parts = cmd.name.strip().split()
        query = PersonData(
            given_name=parts[0] if len(parts) > 1 else "",
            surname=parts[-1],
            birth_date=cmd.birth_date.strip(),
        )
        try:
            normalise.birth_date(cmd.birth_date)
        except normalise.NormaliseError as exc:
            problems.add("birth_date", str(exc))
    elif cmd.birth_date.strip():
        problems.add("name", "search by date of birth needs a name too")
    if not keys and query is None:
        problems.add("name", "give a name, phone number, VRM, handle or email to search for")
    problems.raise_if_any()
    access = _Access(cmd.actor, cmd.purpose)
    async with deps.uow() as uow:
        model = await deps.models.current(uow)
        scored: dict[str, float] = {}
        exact_keys = [k for k in keys if not k.startswith("handle-any:")]
        hits = await uow.repo.hits(exact_keys) if exact_keys else []
        for k in keys:
            if k.startswith("handle-any:"):
                handle = k.split(":", 1)[1]
                hits += await uow.repo.hits([f"handle:{p}:{handle}" for p in _PLATFORMS])
        hidden = [hit for hit in hits if not policy.sees(cmd.actor, hit.region)]
        for hit in hits:
            if policy.sees(cmd.actor, hit.region):
                scored[hit.entity_id] = max(scored.get(hit.entity_id, 0.0), 1.0)
        # Under a grant, a record of the job matches too; nothing else of its region does.
        grant = await access.grant(uow, {h.region for h in hidden}) if hidden else None
        if grant is not None:
            held = await uow.repo.get_records(h.record_id for h in hidden)
            for hit in hidden:
                record = held.get(hit.record_id)
                if record is not None and policy.sees_record(cmd.actor, record, grant):
                    scored[hit.entity_id] = max(scored.get(hit.entity_id, 0.0), 1.0)
        if query is not None:
            f = matching.person_features(query)
            search_keys = resolver.search_keys(f)
            if f["birth_date"]:
                search_keys = [k for k in matching.blocking_keys(f) if "d:" in k] or search_keys
            candidates = await uow.repo.candidates(search_keys, 2000)
            found = await uow.repo.get_records({c.record_id for _, c in candidates}) if candidates else {}
            unseen = {r.region for r in found.values() if not policy.sees(cmd.actor, r.region)}
            grant = await access.grant(uow, unseen) if unseen else None
            for _, c in candidates:
                record = found.get(c.record_id)
                if record is None or not policy.sees_record(cmd.actor, record, grant):
                    continue
                s = _name_score(model, f, c.features)
                if s >= 0.5:
                    scored[c.entity_id] = max(scored.get(c.entity_id, 0.0), s)
        ranked = sorted(scored.items(), key=lambda item: (-item[1], item[0]))
        page = ranked[cmd.offset : cmd.offset + cmd.limit]
        views: list[tuple[EntityView, float]] = []
        for entity_id, s in page:
            try:
                views.append((await _view(uow, access, entity_id), s))
            except NotFound:
                continue
        return views, len(ranked) > cmd.offset + cmd.limit


_PLATFORMS = (
    "instagram",
    "facebook",
    "snapchat",
    "tiktok",
    "x",
    "twitter",
    "telegram",
    "whatsapp",
    "adultwork",
)


def _name_score(model: MatchModel, query: matching.Features, candidate: matching.Features) -> float:
    """How well a stored person fits a name (and date of birth) search: the Fellegi-Sunter
    comparison restricted to what the search gives."""
    s = matching.score(model, query, candidate, detail=False)
    weight = sum(c.weight for c in s.contributions if c.comparison in ("given_name", "surname", "birth_date"))
    return matching.probability(weight - 4.0)


async def explain_match(cmd: commands.ExplainMatch, deps: Deps) -> Explanation:
    access = _Access(cmd.actor, cmd.purpose)
    async with deps.uow() as uow:
        model = await deps.models.current(uow)
        found = await uow.repo.get_records([cmd.record_a[1], cmd.record_b[1]])
        records = []
        for field_name, (region, rid) in (("record_a", cmd.record_a), ("record_b", cmd.record_b)):
            name = record_name(region, rid)
            touch(name)
            record = found.get(rid)
            if record is None or record.region is not region:
                raise NotFound(f"{field_name} {name} not found")
            grant = None if policy.sees(cmd.actor, region) else await access.grant(uow, [region])
            if not policy.sees_record(cmd.actor, record, grant):
                raise OutOfScope(f"{field_name} {name} not found")
            records.append(record)
        a, b = records
        if a.record_type is not b.record_type:
            raise InvalidArgument.field("record_b", "compare records of the same type")
        shared = sorted(set(a.deterministic_keys()) & set(b.deterministic_keys()))
        decisions = await uow.repo.different_pairs([a.id])
        if pair_key(a.id, b.id) in decisions:
            decision = "REVIEWER_REJECTED"
        elif shared:
            decision = "DETERMINISTIC"
        elif a.features is not None and b.features is not None:
            p = matching.score(model, a.features, b.features).probability
            t = model.thresholds
            decision = "AUTO_LINK" if p >= t.auto_link else "REVIEW" if p >= t.review else "KEEP_APART"
        else:
            decision = "KEEP_APART"
        return resolver.explanation_for(model, a, b.name, a.features, b.features, decision, shared)


# --- reviews --------------------------------------------------------------------------


async def list_review_tasks(
    cmd: commands.ListReviewTasks, deps: Deps
) -> tuple[list[tuple[ReviewTask, str, str]], bool]:
    access = _Access(cmd.actor, cmd.purpose)
    async with deps.uow() as uow:
        grant = None
        if cmd.region is not None:
            grant = await access.grant(uow, [cmd.region])
        regions, job = policy.review_listing(cmd.actor, cmd.region, grant)
        tasks = await uow.repo.list_review_tasks(regions, cmd.state, cmd.limit + 1, cmd.after, job)
        more = len(tasks) > cmd.limit
        tasks = tasks[: cmd.limit]
        records = await uow.repo.get_records([r for t in tasks for r in (t.record_id, t.candidate_record_id)])
        touch(*(t.name for t in tasks))
        out = []
        for task in tasks:
            a, b = records.get(task.record_id), records.get(task.candidate_record_id)
            out.append((task, a.entity_id if a else "", b.entity_id if b else ""))
        return out, more


async def decide_review(cmd: commands.DecideReview, deps: Deps) -> tuple[ReviewTask, str, str, str]:
    """Confirm: the two records' entities are merged (the reviewer decided). Reject: the pair
    is kept apart for good; no automatic link or merge will join them."""
    reason = cmd.reason.strip()
    if not reason or len(reason) > MAX_REASON:
        raise InvalidArgument.field("reason", "say why (at most 2000 characters)")
    now = deps.clock()
    async with deps.uow() as uow:
        await uow.lock_resolution()
        task = await uow.repo.get_review_task(cmd.task_id, for_update=True)
        name = f"regions/{cmd.region.value}/reviewTasks/{cmd.task_id}"
        touch(name)
        if task is None or task.region is not cmd.region:
            raise NotFound(f"review task {name} not found")
        records = await uow.repo.get_records([task.record_id, task.candidate_record_id])
        a, b = records.get(task.record_id), records.get(task.candidate_record_id)
        if a is None or b is None:
            raise NotFound(f"review task {name} names a record that no longer exists")
        grant = None
        if not (policy.sees(cmd.actor, a.region) and policy.sees(cmd.actor, b.region)):
            grant = await _Access(cmd.actor, cmd.purpose).grant(uow, [a.region, b.region])
        if not policy.may_decide(cmd.actor, a, b, grant):
            raise OutOfScope(f"review task {name} not found")
        decision = "CONFIRMED" if cmd.confirm else "REJECTED"
        if task.state is not ReviewState.OPEN:
            if task.state.value == decision and task.decided_by == cmd.actor.username:
                return task, a.entity_id, b.entity_id, ""  # a repeat of the same decision
            raise FailedPrecondition(
                f"review task {name} is already {task.state.value.lower()}", subject=name
            )
        change_id = ""
        if cmd.confirm:
            if a.entity_id != b.entity_id and grant is not None:
                # Confirming merges the two entities: under a grant, all their records must be the job's.
                involved = await uow.repo.records_of([a.entity_id, b.entity_id])
                policy.ensure_may_change(cmd.actor, involved, name, grant)
            if a.entity_id != b.entity_id:
                conflicts = await uow.repo.different_between([a.entity_id], [b.entity_id])
                if conflicts:
                    raise FailedPrecondition(
                        "a reviewer has kept records of these two entities apart "
                        f"({conflicts[0][0]} and {conflicts[0][1]}); split one of them first",
                        subject=name,
                    )
                change = await resolver.merge_entities(
                    uow,
                    b.entity_id,
                    [a.entity_id],
                    cmd.actor.username,
                    f"review {name} confirmed: {reason}",
                    now,
                )
                change_id = change.id
                await _deconflict_entity(uow, b.entity_id, deps, a.name)
            verdict = PairVerdict.SAME
            task.state = ReviewState.CONFIRMED
        else:
            verdict = PairVerdict.DIFFERENT
            task.state = ReviewState.REJECTED
        x, y = pair_key(a.id, b.id)
        await uow.repo.add_pair_decisions([PairDecision(x, y, verdict, cmd.actor.username, reason, now)])
        task.decided_by = cmd.actor.username
        task.reason = reason
        task.decided_at = now
        task.explanation.decision = "REVIEWER_CONFIRMED" if cmd.confirm else "REVIEWER_REJECTED"
        await uow.repo.save_review_task(task)
        await uow.commit()
        refreshed = await uow.repo.get_records([a.id, b.id])
        return task, refreshed[a.id].entity_id, refreshed[b.id].entity_id, change_id


async def _deconflict_entity(uow: EntityUnitOfWork, entity_id: str, deps: Deps, trigger: str) -> None:
    """After a merge: notices for every pair of regions that now share the entity."""
    regions = sorted((await uow.repo.regions_of([entity_id])).get(entity_id, set()))
    entity = await uow.repo.get_entity(entity_id)
    entity_type = entity.entity_type if entity else RecordType.PERSON
    for i, first in enumerate(regions):
        for second in regions[i + 1 :]:
            await resolver.notify_deconfliction(
                uow, entity_id, entity_type, first, second, trigger, deps.contact_role
            )


# --- merge and split ------------------------------------------------------------------


async def _entity_for_change(
    uow: EntityUnitOfWork, access: _Access, entity_id: str, field_name: str
) -> tuple[Entity, list[SourceRecord]]:
    name = entity_name(entity_id)
    touch(name)
    entity = await uow.repo.get_entity(entity_id)
    if entity is None:
        raise NotFound(f"{field_name} {name} not found")
    if entity.state is EntityState.MERGED:
        # Where it went is told only to a caller who may see what it went into.
        root = await _root(uow, entity_id)
        if root is None or not (await _sight(uow, access, root.id)).seen:
            raise OutOfScope(f"{field_name} {name} not found")
        raise FailedPrecondition(f"{name} was merged into {root.name}; use that id", subject=name)
    sight = await _sight(uow, access, entity.id)
    if sight.records and not sight.seen:
        raise OutOfScope(f"{field_name} {name} not found")
    policy.ensure_may_change(access.actor, sight.records, name, sight.grant)
    return entity, sight.records


async def merge(cmd: commands.MergeEntities, deps: Deps) -> tuple[EntityView, str]:
    reason = cmd.reason.strip()
    problems = Violations()
    if not reason or len(reason) > MAX_REASON:
        problems.add("reason", "say why (at most 2000 characters)")
    others = [o for o in dict.fromkeys(cmd.others) if o]
    if not others:
        problems.add("others", "name at least one entity to merge in")
    if cmd.entity_id in others:
        problems.add("others", "an entity cannot be merged into itself")
    problems.raise_if_any()
    now = deps.clock()
    scope = _scope("MergeEntities", cmd.actor)
    access = _Access(cmd.actor, cmd.purpose)
    async with deps.uow() as uow:
        if cmd.idempotency is not None:
            prior = await uow.recall_request(scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint)
            if prior is not None:
                return await _view(uow, access, cmd.entity_id), prior
        await uow.lock_resolution()
        target, _ = await _entity_for_change(uow, access, cmd.entity_id, "name")
        for index, other in enumerate(others):
            entity, _ = await _entity_for_change(uow, access, other, f"others[{index}]")
            if entity.entity_type is not target.entity_type:
                raise InvalidArgument.field(f"others[{index}]", "merge entities of the same type only")
        conflicts = await uow.repo.different_between([target.id], others)
        if conflicts:
            raise FailedPrecondition(
                f"a reviewer kept records {conflicts[0][0]} and {conflicts[0][1]} apart; "
                "they cannot be merged",
                subject=entity_name(target.id),
            )
        change = await resolver.merge_entities(uow, target.id, others, cmd.actor.username, reason, now)
        await _deconflict_entity(uow, target.id, deps, "")
        if cmd.idempotency is not None:
            await uow.remember_request(
                scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint, change.id
            )
        await uow.commit()
        return await _view(uow, access, target.id), change.id


async def split(cmd: commands.SplitEntity, deps: Deps) -> tuple[EntityView, list[EntityView], str]:
    reason = cmd.reason.strip()
    problems = Violations()
    if not reason or len(reason) > MAX_REASON:
        problems.add("reason", "say why (at most 2000 characters)")
    if bool(cmd.records) == bool(cmd.undo_change):
        problems.add(
            "records", "give either the records to split out or the merge or split to undo (undo_change)"
        )
    problems.raise_if_any()
    now = deps.clock()
    scope = _scope("SplitEntity", cmd.actor)
    access = _Access(cmd.actor, cmd.purpose)
    async with deps.uow() as uow:
        if cmd.idempotency is not None:
            prior = await uow.recall_request(scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint)
            if prior is not None:
                change = await uow.repo.get_change(prior)
                view = await _view(uow, access, cmd.entity_id)
                return view, [await _view(uow, access, e) for e in _split_out(change)], prior
        await uow.lock_resolution()
        entity, records = await _entity_for_change(uow, access, cmd.entity_id, "name")
        undone = await uow.repo.get_change(cmd.undo_change) if cmd.undo_change else None
        if undone is not None and undone.kind is ChangeKind.SPLIT:
            change = await _undo_split(uow, access, cmd, entity, undone, reason, now)
        elif cmd.undo_change:
            change = await _undo_merge(uow, cmd, entity, reason, now)
        else:
            change = await _split_records(uow, cmd, entity, records, reason, now)
        moved = await uow.repo.get_records(m.record_id for m in change.moves)
        regions = frozenset({r.region for r in moved.values()} | {r.region for r in records})
        if change.kind is ChangeKind.SPLIT_UNDONE:
            # The entity split off is merged back: told as a merge naming the split it undid.
            uow.record(EntitiesMerged(change, regions, moved))
            await _deconflict_entity(uow, entity.id, deps, "")
        else:
            uow.record(EntitySplit(change, regions, moved))
        if cmd.idempotency is not None:
            await uow.remember_request(
                scope, cmd.idempotency.request_id, cmd.idempotency.fingerprint, change.id
            )
        await uow.commit()
        view = await _view(uow, access, entity.id)
        return view, [await _view(uow, access, e) for e in _split_out(change)], change.id


def _split_out(change: EntityChange | None) -> tuple[str, ...]:
    """The entities a split or an undone merge left apart (an undone split leaves none)."""
    if change is None or change.kind is ChangeKind.SPLIT_UNDONE:
        return ()
    return change.others


async def _undo_merge(
    uow: EntityUnitOfWork, cmd: commands.SplitEntity, entity: Entity, reason: str, now: datetime
) -> EntityChange:
    merge_change = await uow.repo.get_change(cmd.undo_change)
    if (
        merge_change is None
        or merge_change.kind is not ChangeKind.MERGED
        or merge_change.entity_id != entity.id
    ):
        raise InvalidArgument.field("undo_change", f"not a merge into or a split of {entity.name}")
    if merge_change.undone_by:
        raise FailedPrecondition(f"merge {merge_change.id} was already undone", subject=cmd.undo_change)
    moves: list[Move] = []
    for other in merge_change.others:
        back = [m.record_id for m in merge_change.moves if m.from_entity == other]
        moved = await uow.repo.move_records(entity.id, other, back)
        moves.extend(Move(r, entity.id, other) for r in moved)
        await uow.repo.set_merged(other, None, now)
    change = await _record_undo(
        uow,
        new_id(),
        merge_change,
        ChangeKind.MERGE_UNDONE,
        merge_change.others,
        moves,
        cmd.actor,
        reason,
        now,
    )
    await uow.relations.undo_merge(merge_change.id, entity.id)
    await _keep_apart(uow, [m.record_id for m in moves], entity.id, cmd.actor.username, reason, now)
    return change


async def _undo_split(
    uow: EntityUnitOfWork,
    access: _Access,
    cmd: commands.SplitEntity,
    entity: Entity,
    split_change: EntityChange,
    reason: str,
    now: datetime,
) -> EntityChange:
    """Merge the entities a split made back into the entity split from, exactly: only while
    they hold just the records the split moved (otherwise the records have moved on, or others
    joined them, and the undo would not restore what was), and never over a reviewer's "kept
    apart". The "kept apart" decisions a person's split recorded go with the split they
    belong to; any other (a reviewer's, made since) refuses the undo."""
    if split_change.entity_id != entity.id:
        gone = await uow.repo.get_entity(split_change.entity_id)
        if gone is not None and split_change.entity_id in await uow.repo.merged_ids(entity.id):
            raise FailedPrecondition(
                f"{gone.name}, the entity split {split_change.id} split, has since been merged "
                f"into {entity.name}; undo that merge first",
                subject=cmd.undo_change,
            )
        raise InvalidArgument.field("undo_change", f"not a merge into or a split of {entity.name}")
    if split_change.undone_by:
        raise FailedPrecondition(f"split {split_change.id} was already undone", subject=cmd.undo_change)
    back: dict[str, list[str]] = {}
    for other in split_change.others:
        name = entity_name(other)
        split_off = await uow.repo.get_entity(other)
        if split_off is None or split_off.state is EntityState.MERGED:
            raise FailedPrecondition(
                f"{name}, split off by {split_change.id}, has since been merged into another entity; "
                "undo that merge first",
                subject=cmd.undo_change,
            )
        await _entity_for_change(uow, access, other, "undo_change")
        moved = {m.record_id for m in split_change.moves if m.to_entity == other}
        held = {r.id for r in await uow.repo.records_of([other])}
        if moved - held:
            raise FailedPrecondition(
                f"{len(moved - held)} of the records split off into {name} have since moved to "
                "another entity; the split can no longer be undone exactly",
                subject=cmd.undo_change,
            )
        if held - moved:
            raise FailedPrecondition(
                f"{len(held - moved)} records were linked to {name} after the split, and undoing it "
                "would take them too: split them out of it first, or merge the two entities with "
                "MergeEntities",
                subject=cmd.undo_change,
            )
        back[other] = sorted(moved)
    returning = [r for records in back.values() for r in records]
    remaining = [r.id for r in await uow.repo.records_of([entity.id])]
    own_reason = f"split: {split_change.reason}"
    decisions = await uow.repo.different_decisions(returning, remaining)
    its_own = [
        d
        for d in decisions
        if (d.decided_by, d.reason, d.at) == (split_change.decided_by, own_reason, split_change.at)
    ]
    kept_apart = [d for d in decisions if d not in its_own]
    if kept_apart:
        first = kept_apart[0]
        raise FailedPrecondition(
            f"{first.decided_by} kept records {first.record_a} and {first.record_b} apart; "
            "the split cannot be undone",
            subject=cmd.undo_change,
        )
    moves: list[Move] = []
    for other, records in back.items():
        done = await uow.repo.move_records(other, entity.id, records)
        moves.extend(Move(r, other, entity.id) for r in done)
        await uow.repo.set_merged(other, entity.id, now)
    change_id = new_id()
    # The relations the records took (and any since recorded on the entity split off) come back.
    await uow.relations.follow_merge(list(back), entity.id, change_id)
    change = await _record_undo(
        uow, change_id, split_change, ChangeKind.SPLIT_UNDONE, tuple(back), moves, cmd.actor, reason, now
    )
    await uow.repo.remove_pair_decisions((d.record_a, d.record_b) for d in its_own)
    return change


async def _record_undo(
    uow: EntityUnitOfWork,
    change_id: str,
    undone: EntityChange,
    kind: ChangeKind,
    others: tuple[str, ...],
    moves: list[Move],
    actor: Principal,
    reason: str,
    now: datetime,
) -> EntityChange:
    """The change that undoes `undone` (a merge or a split of the entity it was made on): kept
    in the history, with `undone` marked as undone by it, and the entity touched."""
    change = EntityChange(
        change_id, undone.entity_id, kind, others, tuple(moves), actor.username, reason, now, undoes=undone.id
    )
    await uow.repo.add_change(change)
    await uow.repo.mark_undone(undone.id, change.id)
    await uow.repo.touch_entities([undone.entity_id], now)
    return change


async def _split_records(
    uow: EntityUnitOfWork,
    cmd: commands.SplitEntity,
    entity: Entity,
    records: list[SourceRecord],
    reason: str,
    now: datetime,
) -> EntityChange:
    held = {r.id: r for r in records}
    chosen: list[str] = []
    for index, (region, rid) in enumerate(cmd.records):
        record = held.get(rid)
        if record is None or record.region is not region:
            raise InvalidArgument.field(
                f"records[{index}]", f"{record_name(region, rid)} is not a record of {entity.name}"
            )
        chosen.append(rid)
    if len(set(chosen)) >= len(held):
        raise InvalidArgument.field("records", "leave at least one record in the entity")
    split_off = Entity(new_id(), entity.entity_type, now, now)
    await uow.repo.add_entities([split_off])
    moved = await uow.repo.move_records(entity.id, split_off.id, sorted(set(chosen)))
    await uow.relations.follow_split(entity.id, split_off.id, moved)
    change = EntityChange(
        new_id(),
        entity.id,
        ChangeKind.SPLIT,
        (split_off.id,),
        tuple(Move(r, entity.id, split_off.id) for r in moved),
        cmd.actor.username,
        reason,
        now,
    )
    await uow.repo.add_change(change)
    await uow.repo.touch_entities([entity.id], now)
    await _keep_apart(uow, moved, entity.id, cmd.actor.username, reason, now)
    return change


async def _keep_apart(
    uow: EntityUnitOfWork, moved: list[str], remaining_entity: str, by: str, reason: str, now: datetime
) -> None:
    """A split or an undone merge is a human decision that these records are not the
    remaining ones: record it pair by pair so that no later automatic link rejoins them."""
    remaining = [r.id for r in await uow.repo.records_of([remaining_entity])]
    pairs = resolver.group_pairs(moved, remaining)
    await uow.repo.add_pair_decisions(
        [PairDecision(a, b, PairVerdict.DIFFERENT, by, f"split: {reason}", now) for a, b in pairs]
    )


# --- models and consumers -------------------------------------------------------------


async def save_model(model: MatchModel, deps: Deps) -> None:
    async with deps.uow() as uow:
        await uow.repo.save_model(model, deps.clock())
        await uow.commit()
    deps.models.model = model


async def record_job_subjects(
    job: str, region: Region, entity_ids: list[str], uow: EntityUnitOfWork, deps: Deps
) -> int:
    """A job names entities as its subjects: the job's region now has an interest in them.
    When another region holds records on such an entity, both get a deconfliction notice.

    Subject ids come from whoever raised the job and are not checked there, so only entities
    the job's region may see count (it holds a record of them; the national team sees all):
    any other id would make the notices tell which regions hold it."""
    now = deps.clock()
    added = 0
    for entity_id in entity_ids:
        entity = await _root(uow, entity_id)
        if entity is None:
            log.info("job %s names unknown entity %s; ignored", job, entity_id)
            continue
        held = (await uow.repo.regions_of([entity.id])).get(entity.id, set())
        if region is not Region.NATIONAL and region not in held:
            log.info(
                "job %s names entity %s, which %s holds no record of; ignored", job, entity_id, region.value
            )
            continue
        if not await uow.repo.add_job_subject(job, entity.id, region, now):
            continue
        added += 1
        for other in sorted(held - {region}):
            await resolver.notify_deconfliction(
                uow, entity.id, entity.entity_type, region, other, job, deps.contact_role
            )
    return added


__all__ = ["Deps", "LinkMethod", "ModelStore"]
