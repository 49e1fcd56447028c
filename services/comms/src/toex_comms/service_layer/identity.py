"""Entity merges and splits, applied to one region's attributions inside the consumer's
transaction (it commits). The rules, and why, are in the README ("Identity changes").

- A merge: the region's attributions to the merged entities move to the surviving one, each
  keeping who decided it and when, and noting the merge that moved it.
- A split: an attribution follows its source record to the entity the record moved to; one
  whose record is not known (given by hand, or recorded before records were kept) stays and is
  flagged for a person to check. A split undoing a merge applied here puts back what that
  merge moved, where nothing changed it since.

Every change is applied once per region, by its change id; what it did to each attribution is
kept in the attribution's history (the attribution as it was, and where it went).
"""

from __future__ import annotations

import logging
from datetime import datetime

from toex_kernel.regions import Region

from toex_comms.domain.commands import FollowMerge, FollowSplit
from toex_comms.domain.identity import (
    MAX_HOPS,
    Applied,
    AttributionMove,
    ChangeKind,
    IdentityChange,
    Outcome,
    entity_key,
    spellings,
)
from toex_comms.domain.model import Attribution
from toex_comms.service_layer.ports import CommsUnitOfWork

log = logging.getLogger(__name__)


async def placed(
    uow: CommsUnitOfWork, region: Region, entity: str, record: str, decided_at: datetime
) -> tuple[str, str]:
    """Where an attribution to `entity` from `record`, decided at `decided_at`, belongs now as
    far as the changes applied in `region` say, and the change that says so ("" none): the
    entity a later split moved the record to, then the survivor of any merge, not undone, that
    took that entity in. A link delivered late, after the change that moved its record or
    merged its entity, lands where the change put the others."""
    current, via = entity_key(entity), ""
    if record:
        split = await uow.repo.last_split_of(region, record, decided_at)
        moved_to = split.destination(record) if split else None
        if split is not None and moved_to:
            current, via = entity_key(moved_to), split.change_id
    seen = {current}
    for _ in range(MAX_HOPS):
        merge = await uow.repo.absorbed_into(region, current)
        if merge is None or merge.entity in seen:
            break
        current, via = merge.entity, merge.change_id
        seen.add(current)
    return current, via


async def follow_merge(cmd: FollowMerge, uow: CommsUnitOfWork, now: datetime) -> Applied:
    region = cmd.region
    survivor = entity_key(cmd.entity)
    merged = tuple(m for m in dict.fromkeys(entity_key(x) for x in cmd.merged) if m and m != survivor)
    change = IdentityChange(
        cmd.change_id,
        ChangeKind.MERGE,
        survivor,
        cmd.occurred_at,
        now,
        cmd.decided_by,
        merged=merged,
    )
    done = Applied()
    if not await uow.repo.claim_change(region, change):
        return done  # applied before, under this event or another
    undoer = await uow.repo.undoer_of(region, cmd.change_id)
    if undoer:
        # Its undo came first: the entities are apart again, so nothing moves.
        await uow.repo.mark_undone(region, cmd.change_id, undoer)
        log.info("merge %s in %s: undone by %s before it arrived", cmd.change_id, region.value, undoer)
        return done
    if not merged:
        # A merge across regions: the entity service leaves the merged ids out of each region's
        # copy, so which attributions were to them cannot be told here. Nothing moves.
        log.warning(
            "merge %s in %s names no merged entity (a merge across regions): attributions to the "
            "merged entities stay on them",
            cmd.change_id,
            region.value,
        )
        return done
    for a in await uow.repo.attributions_of_entities(region, [s for m in merged for s in spellings(m)]):
        # The survivor, unless a split applied here since moved the record on.
        to, _ = await placed(uow, region, survivor, a.record, cmd.occurred_at)
        if to == entity_key(a.entity_id):
            continue  # a cycle the entity service never makes: leave it be
        moved = await uow.repo.rekey(region, a, to, cmd.change_id)
        note = f"entity {entity_key(a.entity_id)} merged into {survivor} by change {cmd.change_id}"
        done.moves.append(
            AttributionMove(
                cmd.change_id,
                ChangeKind.MERGE,
                a,
                to,
                Outcome.MOVED if moved else Outcome.JOINED,
                now,
                note if moved else f"{note}; {to} held it already",
            )
        )
    await uow.repo.add_moves(region, done.moves)
    log.info("merge %s in %s: %s", cmd.change_id, region.value, _summary(done))
    return done


async def follow_split(cmd: FollowSplit, uow: CommsUnitOfWork, now: datetime) -> Applied:
    region = cmd.region
    entity = entity_key(cmd.entity)
    destinations = {record: entity_key(to) for record, to in cmd.moves}
    change = IdentityChange(
        cmd.change_id,
        ChangeKind.SPLIT,
        entity,
        cmd.occurred_at,
        now,
        cmd.decided_by,
        moved_records=tuple(destinations),
        moved_to=tuple(destinations.values()),
        undoes=cmd.undone_change,
    )
    done = Applied()
    if not await uow.repo.claim_change(region, change):
        return done
    handled: set[tuple[str, str, str]] = set()
    undone = await uow.repo.get_change(region, cmd.undone_change) if cmd.undone_change else None
    restoring = undone is not None and undone.kind is ChangeKind.MERGE and not undone.undone_by
    if undone is not None and restoring:
        await _undo_merge(uow, region, undone, change, destinations, done, handled, now)
        await uow.repo.mark_undone(region, undone.change_id, change.change_id)
    for a in await uow.repo.attributions_of_entities(region, spellings(entity)):
        if a.key in handled:
            continue
        to = destinations.get(a.record) if a.record else None
        if to and to != entity:
            moved = await uow.repo.rekey(region, a, to, change.change_id)
            note = f"record {a.record} moved from entity {entity} to {to} by change {change.change_id}"
            done.moves.append(
                AttributionMove(
                    change.change_id,
                    ChangeKind.SPLIT,
                    a,
                    to,
                    Outcome.MOVED if moved else Outcome.JOINED,
                    now,
                    note if moved else f"{note}; {to} held it already",
                )
            )
        elif not a.record and _unsure(a, cmd, undone if restoring else None):
            what = (
                f"merge {cmd.undone_change} was undone (change {change.change_id}) and this attribution "
                "was given after it"
                if cmd.undone_change
                else f"entity {entity} was split (change {change.change_id})"
            )
            await _flag(uow, region, a, change, done, now, _review(what))
    await uow.repo.add_moves(region, done.moves)
    log.info("split %s in %s: %s", change.change_id, region.value, _summary(done))
    return done


def _unsure(a: Attribution, cmd: FollowSplit, undone: IdentityChange | None) -> bool:
    """Whether an attribution of no known record may have gone with the records that moved.
    A plain split: always. Undoing a merge applied here: if it was given after the merge (what
    the merge moved is put back exactly). Undoing a merge that has not arrived here (and now
    never takes effect): nothing moved."""
    if not cmd.undone_change:
        return True
    return undone is not None and a.recorded_at >= undone.occurred_at


def _review(what: str) -> str:
    return (
        f"{what}; whether this attribution (given by hand, or recorded before source records were "
        "kept) went with the records that moved cannot be told: check it"
    )


async def _flag(
    uow: CommsUnitOfWork,
    region: Region,
    a: Attribution,
    change: IdentityChange,
    done: Applied,
    now: datetime,
    review: str,
) -> None:
    await uow.repo.flag_attribution(region, a, review)
    done.moves.append(
        AttributionMove(change.change_id, ChangeKind.SPLIT, a, a.entity_id, Outcome.FLAGGED, now, review)
    )


async def _undo_merge(
    uow: CommsUnitOfWork,
    region: Region,
    merge: IdentityChange,
    change: IdentityChange,
    destinations: dict[str, str],
    done: Applied,
    handled: set[tuple[str, str, str]],
    now: datetime,
) -> None:
    """Put back what `merge` moved, as it was before (who decided it and when, any change that
    had moved it before), where nothing changed it since; flag what changed since. What it
    joined with an attribution the survivor held comes back too; the survivor keeps its own."""
    for past in await uow.repo.moves_of(region, merge.change_id):
        before = past.before
        found = before
        if past.outcome is Outcome.FLAGGED:
            continue
        if past.outcome is Outcome.MOVED:
            current = await uow.repo.get_attribution(region, before.identifier, past.to_entity, before.record)
            if current is None:
                continue  # moved on or removed since: nothing of the merge's is left here
            handled.add(current.key)
            if current.via_change != merge.change_id:
                if not (current.record and current.record in destinations):
                    await _flag(uow, region, current, change, done, now, _changed_since(merge, change))
                continue
            if before.record and destinations.get(before.record) != entity_key(before.entity_id):
                await _flag(
                    uow,
                    region,
                    current,
                    change,
                    done,
                    now,
                    f"merge {merge.change_id} was undone (change {change.change_id}), but the record "
                    "this attribution came from was not moved back: check it",
                )
                continue
            await uow.repo.remove_attribution(region, current)
            found = current
        # A JOINED one is put back from the merge's history (the survivor kept its own).
        restored = await uow.repo.restore_attribution(region, before)
        note = (
            f"merge {merge.change_id} undone by change {change.change_id}: back on entity {before.entity_id}"
        )
        done.moves.append(
            AttributionMove(
                change.change_id,
                ChangeKind.SPLIT,
                found,
                before.entity_id,
                Outcome.MOVED if restored else Outcome.JOINED,
                now,
                note if restored else f"{note}, which held it already",
            )
        )


def _changed_since(merge: IdentityChange, change: IdentityChange) -> str:
    return (
        f"merge {merge.change_id} was undone (change {change.change_id}), but this attribution "
        "changed after the merge moved it here: check it"
    )


def _summary(done: Applied) -> str:
    return ", ".join(f"{done.count(o)} {o.value}" for o in Outcome)
