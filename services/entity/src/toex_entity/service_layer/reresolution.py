"""Re-resolution when the active model changes: merges and splits the new model decides.

Only pairs whose score can differ are looked at. The new model is compared with the one it
replaces, level by level (`changed_levels`): a pair scores differently only if, in some
comparison, it reaches a level whose parameters (or term frequencies) changed. A level other
than "missing on either" needs a value on both records, so the records whose pairs can score
differently are those with a value in a changed comparison's column (`Selection`), and the
database picks them (`persons_to_reresolve`): the others are never read. When the prior, the
thresholds or a null level changed, every pair scores differently and every record is read.

In id order, a batch per transaction under the resolution lock, with the cursor stored in the
same transaction (`learning_state`): a stop resumes where it was, and nothing is done twice.

- **Splits.** A record that joined its entity by an automatic link (`AUTO_LINK`) and that the
  new model scores below the review threshold against every other record of the entity is
  split off into an entity of its own (`model:<version>`, the reason naming the model, an
  `EntitySplit` event; the change records the record moved, and `SplitEntity --undo` puts it
  back with its relations: no "kept apart" decision is recorded, as none was made by a
  person). Never a record a reviewer confirmed, one moved by a merge a person decided (or put
  back by a person's undoing of a split) or one of an entity that survived such a merge, nor
  one linked deterministically (shared official identifier).
- **Merges.** A record the new model links automatically to a record of another entity of its
  region merges the two (the older id survives), unless a reviewer kept any of their records
  apart; reversible (`SplitEntity --undo`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from toex_kernel.ids import new_id

from toex_entity.domain import matching
from toex_entity.domain.events import EntitySplit
from toex_entity.domain.matching import COMPARISONS, EXACT_LEVEL, MatchModel
from toex_entity.domain.model import ChangeKind, Entity, EntityChange, LinkMethod, Move
from toex_entity.domain.records import RecordType
from toex_entity.service_layer import resolver
from toex_entity.service_layer.ports import Candidate, EntityUnitOfWork

log = logging.getLogger(__name__)

ADDRESS_KEY_PREFIXES = ("at:", "ap:", "st:")
TOLERANCE = 1e-9


@dataclass(frozen=True)
class Selection:
    """Which records re-resolution reads: all, or those with a value in one of `columns`."""

    everything: bool
    columns: tuple[str, ...] = ()
    # Comparison name -> the changed levels (for the progress log and the tests).
    changed: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def nothing(self) -> bool:
        return not self.everything and not self.columns


ALL = Selection(True)


def _differs(a: float, b: float) -> bool:
    return abs(a - b) > TOLERANCE * max(1.0, abs(a), abs(b))


def changed_levels(old: MatchModel, new: MatchModel) -> dict[str, set[int]] | None:
    """Per comparison, the levels whose parameters differ between the two models; None when
    every pair scores differently (the prior or the thresholds changed)."""
    if _differs(old.prior, new.prior) or old.thresholds != new.thresholds:
        return None
    changed: dict[str, set[int]] = {}
    for comparison in COMPARISONS:
        a = old.levels.get(comparison.name)
        b = new.levels.get(comparison.name)
        if a is None or b is None or len(a) != len(b):
            changed[comparison.name] = set(range(len(comparison.levels)))
            continue
        levels: set[int] = set()
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            if (x is None) != (y is None) or (
                x is not None and y is not None and (_differs(x.m, y.m) or _differs(x.u, y.u))
            ):
                levels.add(index)
        name = comparison.name
        if old.term_frequencies.get(name, {}) != new.term_frequencies.get(name, {}) or _differs(
            old.tf_floor.get(name, 0.0), new.tf_floor.get(name, 0.0)
        ):
            levels.add(EXACT_LEVEL)
        if levels:
            changed[name] = levels
    return changed


def selection(old: MatchModel | None, new: MatchModel) -> Selection:
    """The records whose pairs can score differently under `new` than under `old`."""
    if old is None:
        return ALL
    changed = changed_levels(old, new)
    if changed is None:
        return ALL
    columns: list[str] = []
    for comparison in COMPARISONS:
        levels = changed.get(comparison.name)
        if not levels:
            continue
        if any(comparison.levels[i].is_null for i in levels if i < len(comparison.levels)):
            return Selection(True, changed=tuple((k, tuple(sorted(v))) for k, v in changed.items()))
        # The null level tests the comparison's first column: any other level needs it on both.
        columns.append(comparison.columns[0])
    return Selection(False, tuple(columns), tuple((k, tuple(sorted(v))) for k, v in changed.items()))


def selected(spec: Selection, features: matching.Features) -> bool:
    return spec.everything or any(features.get(c) is not None for c in spec.columns)


@dataclass
class BatchOutcome:
    read: int = 0
    merged: int = 0
    split: int = 0
    last_id: str = ""


async def reresolve_batch(
    uow: EntityUnitOfWork,
    model: MatchModel,
    spec: Selection,
    cursor: str,
    limit: int,
    now: datetime,
) -> BatchOutcome:
    """Re-resolve the next `limit` selected person records after `cursor` (in the caller's
    transaction, under the resolution lock). `read` 0: none left."""
    repo: Any = uow.repo
    rows = await repo.persons_to_reresolve(cursor, limit, None if spec.everything else list(spec.columns))
    outcome = BatchOutcome(read=len(rows))
    if not rows:
        return outcome
    outcome.last_id = rows[-1][0].record_id
    batch = [c for c, _ in rows]
    weights = matching.weight_table(model)
    prior = model.prior_weight

    def weight(a: matching.Features, b: matching.Features) -> float:
        return matching.fast_weight(weights, prior, a, b)

    # Records stored before the address keys existed get them as they are read (a later record
    # of a pair then finds the earlier one under them).
    address_keys = sorted(
        (k, r.record_id)
        for r in batch
        for k in matching.blocking_keys(r.features)
        if k.startswith(ADDRESS_KEY_PREFIXES)
    )
    if address_keys:
        await repo.add_keys(address_keys)

    split_to = await _splits(uow, model, rows, weight, now)
    outcome.split = len(split_to)

    # Merges: the best automatic link of each record to another entity of its region.
    keys_of = {r.record_id: matching.query_keys(r.features) for r in batch}
    wanted = sorted({k for keys in keys_of.values() for k in keys})
    by_key: dict[str, list[Candidate]] = {}
    found = (
        await repo.candidates(wanted, resolver.PER_KEY_LIMIT)
        if spec.everything
        else await repo.candidates_with(wanted, resolver.PER_KEY_LIMIT, list(spec.columns))
    )
    for key, candidate in found:
        if selected(spec, candidate.features):
            by_key.setdefault(key, []).append(candidate)
    entity_now = {r.record_id: split_to.get(r.record_id, r.entity_id) for r in batch}
    redirect: dict[str, str] = {}

    def find(entity_id: str) -> str:
        while entity_id in redirect:
            entity_id = redirect[entity_id]
        return entity_id

    auto = model.thresholds.auto_link
    for record in batch:
        root = find(entity_now[record.record_id])
        best: tuple[float, str, str] | None = None  # weight, entity, record
        seen: set[str] = {record.record_id}
        for key in keys_of[record.record_id]:
            for c in by_key.get(key, ()):
                if c.record_id in seen or c.region is not record.region:
                    continue
                seen.add(c.record_id)
                other = find(c.entity_id)
                if other == root:
                    continue
                w = weight(record.features, c.features)
                if matching.probability(w) >= auto and (best is None or w > best[0]):
                    best = (w, other, c.record_id)
        if best is None:
            continue
        _, other, other_record = best
        if await repo.different_between([root], [other]):
            continue  # a reviewer kept records of the two apart
        into, gone = sorted((root, other))
        why = (
            f"re-resolution under model {model.version}: record {record.record_id} and record "
            f"{other_record} match at or above the auto-link threshold"
        )
        await resolver.merge_entities(uow, into, [gone], f"model:{model.version}", why, now)
        redirect[gone] = into
        outcome.merged += 1
    return outcome


async def _splits(
    uow: EntityUnitOfWork,
    model: MatchModel,
    rows: list[tuple[Candidate, str]],
    weight: Any,
    now: datetime,
) -> dict[str, str]:
    """Split off each automatically linked record of the batch that the model now scores below
    the review threshold against every other record of its entity; the new entity of each."""
    repo: Any = uow.repo
    linked = [(c, m) for c, m in rows if m == LinkMethod.AUTO_LINK.value]
    if not linked:
        return {}
    members: dict[str, list[Candidate]] = {}
    for candidate, _ in await repo.members({c.entity_id for c, _ in linked}):
        members.setdefault(candidate.entity_id, []).append(candidate)
    review = model.thresholds.review
    doubtful: list[Candidate] = []
    for record, _ in linked:
        others = [m for m in members.get(record.entity_id, ()) if m.record_id != record.record_id]
        if not others:
            continue
        if all(matching.probability(weight(record.features, m.features)) < review for m in others):
            doubtful.append(record)
    if not doubtful:
        return {}
    kept = await repo.confirmed_records([(r.record_id, r.entity_id) for r in doubtful])
    split: dict[str, str] = {}
    for record in doubtful:
        if record.record_id in kept:
            continue
        # Two doubtful records of one entity are split one at a time: the second is judged
        # against what is left once the first has gone.
        members[record.entity_id] = [m for m in members[record.entity_id] if m.record_id != record.record_id]
        if not members[record.entity_id]:
            continue
        change = await split_off(uow, model, record, now)
        split[record.record_id] = change.others[0]
    return split


async def split_off(
    uow: EntityUnitOfWork, model: MatchModel, record: Candidate, now: datetime
) -> EntityChange:
    """Move one record out of its entity into a new one, decided by the model."""
    repo: Any = uow.repo
    entity = record.entity_id
    fresh = Entity(new_id(), RecordType.PERSON, now, now)
    await repo.add_entities([fresh])
    moved = await repo.move_records(entity, fresh.id, [record.record_id])
    change = EntityChange(
        new_id(),
        entity,
        ChangeKind.SPLIT,
        (fresh.id,),
        tuple(Move(r, entity, fresh.id) for r in moved),
        f"model:{model.version}",
        f"re-resolution under model {model.version}: record {record.record_id} no longer matches "
        f"any other record of {entity} (below the review threshold)",
        now,
    )
    await repo.add_change(change)
    await repo.touch_entities([entity], now)
    await uow.relations.follow_split(entity, fresh.id, moved)
    records = await repo.get_records(moved)
    regions = await repo.regions_of([entity])
    uow.record(EntitySplit(change, frozenset(regions.get(entity, set())) | {record.region}, records))
    return change
