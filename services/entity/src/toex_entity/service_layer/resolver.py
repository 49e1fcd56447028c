"""Resolution of a batch of source records (one record for ResolveRecord, thousands for
IngestRecords) inside one unit of work.

For each record, in order:
1. Deterministic: stored records of the same type sharing a strong identifier (for persons,
   an official identifier) put the record in their entity; when they sit in several entities
   those are merged, unless a reviewer has kept any of their records apart.
2. Probabilistic (persons): records sharing a blocking key are scored with the
   Fellegi-Sunter model; the best entity at or above the auto-link threshold takes the
   record; entities between the review and auto-link thresholds get review tasks.
3. Otherwise the record starts a new entity.
Records earlier in the batch are candidates for later ones exactly as stored records are.
Afterwards, entities that now hold records of several regions raise deconfliction notices.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from toex_kernel.regions import Region

from toex_entity.domain import matching
from toex_entity.domain.events import DeconflictionRaised, EntitiesMerged, RecordLinked, RelationRecorded
from toex_entity.domain.matching import Features, MatchModel
from toex_entity.domain.model import (
    SYSTEM_DETERMINISTIC,
    SYSTEM_PROBABILISTIC,
    ChangeKind,
    Entity,
    EntityChange,
    Explanation,
    LinkMethod,
    Move,
    Outcome,
    ResolveResult,
    ReviewTask,
    new_id,
    pair_key,
)
from toex_entity.domain.normalise import NormaliseError
from toex_entity.domain.records import PersonData, RecordType, SourceRecord, record_name
from toex_entity.domain.relations import Relation, RelationKind, address_key
from toex_entity.service_layer.ports import Candidate, EntityLink, EntityUnitOfWork

# Blocks larger than this are cut (the most common name pairs in a million records); the
# other keys of a record still find its matches.
PER_KEY_LIMIT = 200


@dataclass
class Context:
    model: MatchModel
    contact_role: object  # Callable[[Region], str]
    actor: str
    now: datetime
    # Explain why a new record was kept apart from its best candidate (single records); bulk
    # ingest skips it, as nothing was linked.
    explain_kept_apart: bool = True


def explanation_for(
    model: MatchModel,
    a: SourceRecord,
    b_name: str,
    fa: Features | None,
    fb: Features | None,
    decision: str,
    shared: list[str],
) -> Explanation:
    if fa is not None and fb is not None:
        s = matching.score(model, fa, fb)
        text = matching.explain_text(s, _decision_words(decision, shared))
        contributions = [c.__dict__ for c in s.contributions]
        weight, probability, prior = s.weight, s.probability, s.prior_weight
    else:
        contributions = []
        weight, probability, prior = 0.0, 1.0 if shared else 0.0, 0.0
        text = _decision_words(decision, shared) + "."
    if shared and decision == "DETERMINISTIC":
        probability = 1.0
    return Explanation(
        record_a=a.name,
        record_b=b_name,
        prior_weight=prior,
        contributions=contributions,
        weight=weight,
        probability=probability,
        decision=decision,
        shared_identifiers=shared,
        text=text,
        model_version=model.version,
    )


def _decision_words(decision: str, shared: list[str]) -> str:
    if decision == "DETERMINISTIC":
        return "linked deterministically on the same " + ", ".join(shared)
    return {
        "AUTO_LINK": "linked automatically (at or above the auto-link threshold)",
        "REVIEW": "sent to review (between the review and auto-link thresholds)",
        "KEEP_APART": "kept apart (below the review threshold)",
        "REVIEWER_REJECTED": "kept apart: a reviewer rejected this pair",
        "REVIEWER_CONFIRMED": "linked: a reviewer confirmed this pair",
    }.get(decision, decision.lower())


@dataclass
class _Batch:
    """What the batch has decided so far, before it is written."""

    redirect: dict[str, str] = field(default_factory=dict)
    new_entities: dict[str, Entity] = field(default_factory=dict)
    records: list[SourceRecord] = field(default_factory=list)
    links: list[EntityLink] = field(default_factory=list)
    keys: list[tuple[str, str]] = field(default_factory=list)
    merges: list[tuple[str, list[str], str, str]] = field(default_factory=list)  # into, others, by, why
    reviews: list[ReviewTask] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)
    # Person records' blocking keys, by record id.
    blocking: dict[str, list[str]] = field(default_factory=dict)
    # In-batch index: key -> [(record, entity at link time)].
    index: dict[str, list[tuple[SourceRecord, str]]] = field(default_factory=lambda: defaultdict(list))

    def find(self, entity_id: str) -> str:
        while entity_id in self.redirect:
            entity_id = self.redirect[entity_id]
        return entity_id


async def resolve_batch(
    uow: EntityUnitOfWork, records: list[SourceRecord], ctx: Context
) -> list[ResolveResult]:
    """Resolve new records (already validated and normalised). The caller holds the
    resolution lock and commits."""
    repo = uow.repo
    model = ctx.model
    weights = matching.weight_table(model)
    prior = model.prior_weight
    # A pair under the review threshold changes nothing unless it is to be explained (a single
    # record's resolution says which record it was kept apart from): drop it as soon as it
    # cannot reach the threshold.
    floor = -math.inf if ctx.explain_kept_apart else matching.review_floor(model.thresholds.review)

    def score_pair(a: Features, b: Features) -> float | None:
        if floor == -math.inf:
            return matching.fast_weight(weights, prior, a, b)
        return matching.weight_at_least(weights, prior, a, b, floor)

    batch = _Batch()
    results: list[ResolveResult] = []

    # Each record's keys, worked out once: deterministic, and those its candidates are under.
    det_of = {r.id: r.deterministic_keys() for r in records}
    query_of = {r.id: matching.query_keys(r.features) for r in records if r.features is not None}
    det_keys = sorted({k for keys in det_of.values() for k in keys})
    block_keys = sorted({k for keys in query_of.values() for k in keys})
    hits = await repo.hits(det_keys) if det_keys else []
    hits_by_key: dict[str, list[tuple[str, str, RecordType, Region]]] = defaultdict(list)
    for hit in hits:
        hits_by_key[hit.key].append((hit.record_id, hit.entity_id, hit.record_type, hit.region))
    blocked = await repo.candidates(block_keys, PER_KEY_LIMIT) if block_keys else []
    by_key: dict[str, list[Candidate]] = defaultdict(list)
    for key, candidate in blocked:
        by_key[key].append(candidate)

    for record in records:
        # 1. deterministic
        det_entities: dict[str, list[str]] = {}  # entity -> shared identifiers
        det_record: dict[str, tuple[str, Region, Features | None]] = {}  # entity -> a record sharing it
        for key in det_of[record.id]:
            for rid, eid, rtype, region in hits_by_key.get(key, ()):
                if rtype is record.record_type:
                    root = batch.find(eid)
                    det_entities.setdefault(root, []).append(key)
                    det_record.setdefault(root, (rid, region, None))
            for other, eid in batch.index.get(key, ()):
                if other.record_type is record.record_type:
                    root = batch.find(eid)
                    det_entities.setdefault(root, []).append(key)
                    det_record.setdefault(root, (other.id, other.region, other.features))
        result: ResolveResult
        if det_entities:
            ordered = sorted(det_entities, key=lambda e: (-len(det_entities[e]), e))
            target = ordered[0]
            shared = sorted(set(det_entities[target]))
            rid, region, features = det_record[target]
            if features is None and record.features is not None:
                features = (await uow.repo.features_of([rid])).get(rid)
            explanation = explanation_for(
                model, record, record_name(region, rid), record.features, features, "DETERMINISTIC", shared
            )
            result = _link(
                batch, record, target, Outcome.LINKED_DETERMINISTIC, explanation, SYSTEM_DETERMINISTIC, ctx
            )
            others = [e for e in ordered[1:] if e != target]
            for other_entity in others:
                group_a = _members(batch, target)
                group_b = _members(batch, other_entity)
                if await repo.different_between(group_a, group_b):
                    continue  # a reviewer kept them apart: link to the first only
                batch.redirect[other_entity] = target
                batch.merges.append(
                    (
                        target,
                        [other_entity],
                        SYSTEM_DETERMINISTIC,
                        f"record {record.name} shares {', '.join(sorted(set(det_entities[other_entity])))} with both",
                    )
                )
                batch.touched.add(target)
        elif record.features is not None:
            # 2. probabilistic
            seen: set[str] = set()
            best_by_entity: dict[str, tuple[float, str, Features, Region]] = {}
            for key in query_of[record.id]:
                for candidate in by_key.get(key, ()):
                    if candidate.record_id in seen:
                        continue
                    seen.add(candidate.record_id)
                    w = score_pair(record.features, candidate.features)
                    if w is None:
                        continue
                    root = batch.find(candidate.entity_id)
                    if root not in best_by_entity or w > best_by_entity[root][0]:
                        best_by_entity[root] = (w, candidate.record_id, candidate.features, candidate.region)
                for other, eid in batch.index.get(key, ()):
                    if other.id in seen or other.features is None:
                        continue
                    seen.add(other.id)
                    w = score_pair(record.features, other.features)
                    if w is None:
                        continue
                    root = batch.find(eid)
                    if root not in best_by_entity or w > best_by_entity[root][0]:
                        best_by_entity[root] = (w, other.id, other.features, other.region)
            ranked = sorted(best_by_entity.items(), key=lambda item: -item[1][0])
            auto, review = model.thresholds.auto_link, model.thresholds.review
            linked_to: str | None = None
            best_explanation: Explanation | None = None
            review_ids: list[str] = []
            for entity_id, (w, rid, features, region) in ranked:
                other_name = record_name(region, rid)
                p = matching.probability(w)
                if p < review:
                    if best_explanation is None and ctx.explain_kept_apart:
                        best_explanation = explanation_for(
                            model,
                            record,
                            other_name,
                            record.features,
                            features,
                            "KEEP_APART",
                            [],
                        )
                    break
                if linked_to is None and p >= auto:
                    linked_to = entity_id
                    best_explanation = explanation_for(
                        model,
                        record,
                        other_name,
                        record.features,
                        features,
                        "AUTO_LINK",
                        [],
                    )
                    continue
                explanation = explanation_for(
                    model, record, other_name, record.features, features, "REVIEW", []
                )
                if best_explanation is None:
                    best_explanation = explanation
                task = ReviewTask(
                    id=new_id(),
                    # A reviewer must see both records: their region, or the national team.
                    region=record.region if region is record.region else Region.NATIONAL,
                    record_id=record.id,
                    candidate_record_id=rid,
                    explanation=explanation,
                    created_at=ctx.now,
                )
                batch.reviews.append(task)
                review_ids.append(task.name)
            if linked_to is not None:
                result = _link(
                    batch,
                    record,
                    linked_to,
                    Outcome.LINKED_PROBABILISTIC,
                    best_explanation,
                    SYSTEM_PROBABILISTIC,
                    ctx,
                )
            else:
                outcome = Outcome.QUEUED_FOR_REVIEW if review_ids else Outcome.NEW_ENTITY
                result = _new_entity(batch, record, outcome, best_explanation, ctx)
            result.review_tasks = review_ids
        else:
            result = _new_entity(batch, record, Outcome.NEW_ENTITY, None, ctx)
        # Index the record for the rest of the batch.
        for key in det_of[record.id]:
            batch.index[key].append((record, result.entity_id))
        if record.features is not None:
            blocking = batch.blocking[record.id] = matching.blocking_keys(record.features)
            for key in blocking:
                batch.index[key].append((record, result.entity_id))
        results.append(result)

    await _write(uow, batch, ctx)
    await _deconflict(uow, batch, records, results, ctx)
    for result in results:
        result.entity_id = batch.find(result.entity_id)
    return results


def _members(batch: _Batch, root: str) -> set[str]:
    """Entity ids (as stored) that the batch has folded into `root`."""
    return {e for e in [root, *batch.redirect] if batch.find(e) == root}


def _link(
    batch: _Batch,
    record: SourceRecord,
    entity_id: str,
    outcome: Outcome,
    explanation: Explanation | None,
    by: str,
    ctx: Context,
) -> ResolveResult:
    record.entity_id = entity_id
    method = LinkMethod.DETERMINISTIC if outcome is Outcome.LINKED_DETERMINISTIC else LinkMethod.AUTO_LINK
    batch.records.append(record)
    batch.links.append(
        EntityLink(
            record.id,
            method.value,
            explanation.probability if explanation else 1.0,
            by,
            ctx.now,
            explanation.without_values().to_json() if explanation else None,
        )
    )
    batch.touched.add(entity_id)
    return ResolveResult(record.id, entity_id, outcome, explanation, region=record.region.value)


def _new_entity(
    batch: _Batch, record: SourceRecord, outcome: Outcome, explanation: Explanation | None, ctx: Context
) -> ResolveResult:
    entity = Entity(new_id(), record.record_type, ctx.now, ctx.now)
    batch.new_entities[entity.id] = entity
    record.entity_id = entity.id
    batch.records.append(record)
    batch.links.append(
        EntityLink(
            record.id,
            LinkMethod.NEW.value,
            0.0,
            ctx.actor,
            ctx.now,
            explanation.without_values().to_json() if explanation else None,
        )
    )
    return ResolveResult(record.id, entity.id, outcome, explanation, region=record.region.value)


# From this many records a batch's events are mapped while its rows are written; a few
# records' events are mapped at commit (quicker than a task to map them).
MAP_MEANWHILE_FROM = 50


async def _write(uow: EntityUnitOfWork, batch: _Batch, ctx: Context) -> None:
    """The batch's rows and events. Each event's envelope is built while rows are written (the
    mapping in the background, `map_meanwhile`), and the index keys, the largest write, go
    last, once every event is recorded (bench/results/entity-ingest.md)."""
    repo = uow.repo
    record_event = uow.record
    for record, link in zip(batch.records, batch.links, strict=True):
        record_event(RecordLinked(record.entity_id, record, link.method, link.probability, link.decided_by))
    meanwhile = len(batch.records) >= MAP_MEANWHILE_FROM
    if meanwhile:
        uow.map_meanwhile()
    if batch.new_entities:
        await repo.add_entities(list(batch.new_entities.values()))
    if batch.records:
        await repo.add_records(batch.records, batch.links)
    for into, others, by, why in batch.merges:
        await merge_entities(uow, into, others, by, why, ctx.now)
    if batch.reviews:
        await repo.add_review_tasks(batch.reviews)
    for relation in await uow.relations.store_relations(
        await relations_from_records(uow, batch), ctx.actor, ctx.now, fresh=True
    ):
        record_event(RelationRecorded(relation))
    if meanwhile:
        uow.map_meanwhile()
    if batch.records:
        # In key order: the index takes them leaf after leaf, not all over the B-tree.
        rows = sorted(
            (k, record.id)
            for record in batch.records
            for k in index_keys(record, batch.blocking.get(record.id))
        )
        await repo.add_keys(rows, fresh=True)
    existing = {batch.find(e) for e in batch.touched} - set(batch.new_entities)
    if existing:
        await repo.touch_entities(existing, ctx.now)


# What a person record's identifiers say it uses: the key's kind -> the entity type at the other
# end and the relation. A VRM on a person's record links them to the vehicle without saying
# they own it: DRIVES_VEHICLE, the weaker claim.
_USES = {
    "tel": (RecordType.PHONE, RelationKind.USES_PHONE),
    "vrm": (RecordType.VEHICLE, RelationKind.DRIVES_VEHICLE),
    "email": (RecordType.EMAIL, RelationKind.USES_EMAIL),
    "handle": (RecordType.ONLINE_ACCOUNT, RelationKind.USES_ONLINE_ACCOUNT),
}


async def relations_from_records(uow: EntityUnitOfWork, batch: _Batch) -> list[Relation]:
    """The relations the batch's person records carry, each with its record as the source and
    its grading: uses the phone, email, online account or vehicle entity of the record's own
    region holding the same identifier (stored already or in this batch; none yet, no
    relation), and lives at each address with a postcode and premises."""
    persons = [r for r in batch.records if r.record_type is RecordType.PERSON]
    if not persons:
        return []
    wanted = sorted({k for r in persons for k in r.identifiers.keys() if k.split(":", 1)[0] in _USES})
    holders: dict[tuple[str, Region], set[str]] = defaultdict(set)
    # The batch's own index keys are written after this (_write): its records come from the
    # batch's index, the stored ones from the database.
    for hit in await uow.repo.hits(wanted) if wanted else []:
        if hit.record_type is _USES[hit.key.split(":", 1)[0]][0]:
            holders[(hit.key, hit.region)].add(batch.find(hit.entity_id))
    for key in wanted:
        for other, entity_id in batch.index.get(key, ()):
            if other.record_type is _USES[key.split(":", 1)[0]][0]:
                holders[(key, other.region)].add(batch.find(entity_id))
    out: dict[tuple[str, str, str, str], Relation] = {}
    for record in persons:
        subject = batch.find(record.entity_id)

        def add(
            kind: RelationKind, target: str, record: SourceRecord = record, subject: str = subject
        ) -> None:
            out.setdefault(
                (record.id, kind.value, target, subject),
                Relation(
                    record.region.value,
                    kind,
                    subject,
                    target,
                    record.source_system,
                    record.source_record_id,
                    record.grading,
                ),
            )

        for key in record.identifiers.keys():
            kind_of = _USES.get(key.split(":", 1)[0])
            if kind_of is None:
                continue
            for target in sorted(holders.get((key, record.region), ())):
                if target != subject:
                    add(kind_of[1], target)
        content = record.content
        if isinstance(content, PersonData):
            for address in content.addresses:
                if not address.postcode or not address.lines:
                    continue
                try:
                    add(RelationKind.LIVES_AT, address_key(address.postcode, address.lines[0]))
                except NormaliseError:
                    continue  # an address that makes no key says nothing to relate
    return list(out.values())


def index_keys(record: SourceRecord, blocking: list[str] | None = None) -> list[str]:
    """Every key a stored record is found under: identifiers, blocking (`blocking`, when
    already worked out) and search keys."""
    keys = set(record.identifiers.keys())
    if record.features is not None:
        keys.update(matching.blocking_keys(record.features) if blocking is None else blocking)
        keys.update(search_keys(record.features))
    return sorted(keys)


def search_keys(features: Features) -> list[str]:
    """Key for SearchEntities by name alone: the surname's phonetic code."""
    return [f"ps:{features['surname_ph']}"] if features.get("surname_ph") else []


async def merge_entities(
    uow: EntityUnitOfWork, into: str, others: list[str], by: str, why: str, now: datetime
) -> EntityChange:
    """Move every record of `others` into `into`, redirect their ids and record the change
    with each record moved, so that it can be undone exactly."""
    repo = uow.repo
    moves: list[Move] = []
    for other in others:
        moved = await repo.move_records(other, into, None)
        moves.extend(Move(r, other, into) for r in moved)
        await repo.set_merged(other, into, now)
    # Relations of the merged entities now join the survivor (undoing the merge puts them back).
    change_id = new_id()
    await uow.relations.follow_merge(others, into, change_id)
    change = EntityChange(change_id, into, ChangeKind.MERGED, tuple(others), tuple(moves), by, why, now)
    await repo.add_change(change)
    await repo.touch_entities([into], now)
    regions = await repo.regions_of([into])
    records = await repo.get_records([m.record_id for m in moves])
    uow.record(EntitiesMerged(change, frozenset(regions.get(into, ())), records))
    return change


async def _deconflict(
    uow: EntityUnitOfWork,
    batch: _Batch,
    records: list[SourceRecord],
    results: list[ResolveResult],
    ctx: Context,
) -> None:
    """Tell both regions, once per entity and pair of regions, that the other holds records."""
    # A new entity holding one record spans one region: only linked entities can span two.
    roots = {batch.find(e) for e in batch.touched}
    if not roots:
        return
    regions = await uow.repo.regions_of(roots)
    for record, result in zip(records, results, strict=True):
        root = batch.find(result.entity_id)
        if root not in roots:
            continue
        for other in sorted(regions.get(root, set()) - {record.region}):
            result.deconflictions.append(other)
            await notify_deconfliction(
                uow, root, record.record_type, record.region, other, record.name, ctx.contact_role
            )


async def notify_deconfliction(
    uow: EntityUnitOfWork,
    entity_id: str,
    entity_type: RecordType,
    region: Region,
    other: Region,
    trigger_record: str,
    contact_role: object,
) -> bool:
    """Both regions get a notice naming the other and a contact role there, once per entity
    and pair of regions. Returns whether notices were sent."""
    if not await uow.repo.claim_deconfliction(entity_id, region, other):
        return False
    await uow.repo.claim_deconfliction(entity_id, other, region)
    held = await uow.repo.records_of([entity_id])
    role: Any = contact_role
    uow.record(
        DeconflictionRaised(
            entity_id,
            entity_type,
            region,
            other,
            trigger_record,
            records={side: tuple(r.name for r in held if r.region is side) for side in (region, other)},
            contacts={side: role(side) for side in (region, other)},
        )
    )
    return True


def group_pairs(a: list[str], b: list[str], limit: int = 10_000) -> list[tuple[str, str]]:
    pairs = [pair_key(x, y) for x in a for y in b]
    return pairs[:limit]
