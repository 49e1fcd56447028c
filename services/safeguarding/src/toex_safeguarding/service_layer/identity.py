"""Identity changes from entity resolution, applied to one region's referrals, inside the
consumer's transaction (it commits). The rules, and why, are in the README ("Identity changes").

- A merge: the open referrals about the merged entities and the surviving one are one person's.
  Drafts become one case (the oldest takes the others in, which close as merged into it);
  every open referral follows the surviving entity unless another open referral already holds
  it for the same concern; referrals past draft are never combined, only told of each other.
- A split: a referral's subject is never moved; the referrals about the entity are told, for
  an officer to review. Undoing a merge this region applied puts back the subjects that merge
  moved, where nothing else changed them since, and tells the rest.
- A person's record linked with a number: referrals raised on that bare number follow the
  person, as for a merge.

Every change is applied once per region, by its key (a change id, or the number linked); each
referral it touches is told once, in one evidence item naming the change (never the subject:
evidence travels in ReferralEvidenceAdded).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from datetime import datetime

from toex_kernel.regions import Region

from toex_safeguarding.domain import commands
from toex_safeguarding.domain.identity import (
    LINK,
    MAX_ALIAS_HOPS,
    MERGE,
    NOTED,
    PHONE_PREFIX,
    SPLIT,
    IdentityChange,
    phone_subject,
    spellings,
    subject_key,
)
from toex_safeguarding.domain.model import Evidence, Referral, referral_name
from toex_safeguarding.domain.values import EvidenceKind, State
from toex_safeguarding.service_layer.ports import SafeguardingUnitOfWork

log = logging.getLogger(__name__)

BY_MERGE = "identity:EntitiesMerged"
BY_SPLIT = "identity:EntitySplit"
BY_LINK = "identity:RecordLinked"


async def resolve(uow: SafeguardingUnitOfWork, region: Region, subject: str) -> str:
    """Who `subject` is now in `region`: its one spelling, followed through the aliases merges
    and linked numbers left (a chain of merges too; a cycle stops where it closes)."""
    current = subject_key(subject)
    seen = {current}
    for _ in range(MAX_ALIAS_HOPS):
        found = await uow.identity.alias(region, current) if current else None
        if not found or found in seen:
            break
        seen.add(found)
        current = found
    return current


async def prefetch(uow: SafeguardingUnitOfWork, region: Region, subjects: Collection[str]) -> None:
    """Look up at once, for a batch of subjects, what `resolve` then answers for each without a
    round trip: one lookup per step of the longest chain of aliases among them (one when none
    is an alias, as in a region without identity changes)."""
    asked: set[str] = set()
    keys = {k for k in (subject_key(s) for s in subjects) if k}
    for _ in range(MAX_ALIAS_HOPS):
        keys -= asked
        if not keys:
            return
        asked |= keys
        keys = set((await uow.identity.aliases(region, keys)).values())


class _Notes:
    """What one identity change tells each referral it touched, as one evidence item each (the
    integration event's id as its reference), and the referrals to store, closed ones first so
    that the keys they release are free for the ones that follow."""

    def __init__(self, region: Region, event_id: str, label: str, by: str, now: datetime) -> None:
        self.region = region
        self.event_id = event_id
        self.label = label
        self.by = by
        self.now = now
        self.referrals: dict[str, Referral] = {}
        self.parts: dict[str, list[str]] = defaultdict(list)

    def hold(self, referral: Referral) -> Referral:
        return self.referrals.setdefault(referral.id, referral)

    def tell(self, referral: Referral, text: str) -> None:
        self.hold(referral)
        if text not in self.parts[referral.id]:
            self.parts[referral.id].append(text)

    async def load(self, uow: SafeguardingUnitOfWork, referral_id: str) -> Referral | None:
        """The region's open referral `referral_id` (the copy this change already holds)."""
        if referral_id in self.referrals:
            held = self.referrals[referral_id]
            return held if held.is_open else None
        found = await uow.referrals.get(referral_id, for_update=True)
        if found is None or found.region is not self.region or not found.is_open:
            return None
        return self.hold(found)

    async def finish(self, uow: SafeguardingUnitOfWork) -> None:
        for referral in self.referrals.values():
            parts = self.parts.get(referral.id)
            if parts and referral.is_open:
                text = f"{self.label}: " + "; ".join(parts) + "."
                referral.add_evidence(
                    [Evidence(EvidenceKind.EVENT, self.event_id, text)], by=self.by, now=self.now
                )
        for referral in sorted(self.referrals.values(), key=lambda r: r.is_open):
            await uow.referrals.save(referral)


def _names(referrals: Collection[Referral]) -> str:
    return ", ".join(r.name for r in referrals)


async def _combine(
    uow: SafeguardingUnitOfWork,
    region: Region,
    target: str,
    others: Collection[str],
    change: IdentityChange,
    notes: _Notes,
    *,
    follows: str,
) -> dict[str, str]:
    """The open referrals about `others`, now known to be `target`, joined with `target`'s own:
    drafts into the oldest draft; then each follows `target` unless another open referral holds
    it for a concern of its own; any left apart are told of each other. Returns the subject each
    referral of the group had before (by id); nothing, when none was about `others`."""
    wanted = set().union(*(spellings(s) for s in (target, *others)))
    group = await uow.referrals.open_about(region, wanted)
    if all(r.subject.entity_id == target for r in group):
        return {}  # the usual record linked: no referral was raised on its numbers
    group = [notes.hold(r) for r in group]
    before = {r.id: r.subject.entity_id for r in group}
    reason = notes.label[0].lower() + notes.label[1:]
    drafts = [r for r in group if r.state is State.DRAFT]
    for other in drafts[1:]:
        keeper = drafts[0]
        differ = keeper.absorb(other, by=notes.by, reason=reason, now=notes.now)
        change.absorbed.append((other.id, keeper.id))
        notes.tell(
            keeper,
            f"took in {other.name}, a draft about the same person, now closed as merged into this "
            "referral; its evidence is copied here marked with where it came from",
        )
        if differ:
            notes.tell(
                keeper, f"it recorded a different {', '.join(differ)}: this referral's is kept, check it"
            )
    remaining = [r for r in group if r.is_open]
    for referral in remaining:
        if referral.subject.entity_id == target:
            continue
        holders = [
            o
            for o in remaining
            if o is not referral
            and o.subject.entity_id == target
            and set(o.concerns) & set(referral.concerns)
        ]
        if holders:
            notes.tell(
                referral,
                f"its subject stays as it was: {_names(holders)} already follows the same person for "
                "the same concern",
            )
            continue
        referral.follow_subject(target, now=notes.now)
        change.rekeyed.append((referral.id, before[referral.id], target))
        notes.tell(referral, follows)
    if len(remaining) > 1:
        for referral in remaining:
            notes.tell(
                referral,
                f"the same person as {_names([o for o in remaining if o is not referral])}; not combined, as "
                "a referral sent for approval or beyond is never rewritten: review them together",
            )
            change.linked.append(referral.id)
    return before


async def merge_identities(cmd: commands.MergeIdentities, uow: SafeguardingUnitOfWork, now: datetime) -> None:
    region = cmd.region
    entity = subject_key(cmd.entity)
    merged = [m for m in dict.fromkeys(subject_key(x) for x in cmd.merged) if m and m != entity]
    change = IdentityChange(cmd.change_id, MERGE, entity, at=now)
    if not await uow.identity.claim(region, change):
        return  # applied before, under this event id or another
    undoer = await uow.identity.undoer_of(region, cmd.change_id)
    if undoer:
        # Its undo came first: the entities are apart again, so nothing is joined.
        change.undone_by = undoer
        await uow.identity.save(region, change)
        return
    notes = _Notes(region, cmd.event_id, f"Entity change {cmd.change_id} (merge)", BY_MERGE, now)
    if not merged:
        # A merge across regions: the entity service leaves the merged ids out of each region's
        # copy, so which of this region's referrals were about them cannot be told here.
        target = await resolve(uow, region, entity)
        for referral in await uow.referrals.open_about(region, spellings(target)):
            notes.tell(
                referral,
                "other entities, some held by another region, were merged into the subject's "
                "entity; referrals about them are not identified by the change: review",
            )
            change.linked.append(referral.id)
        await notes.finish(uow)
        await uow.identity.save(region, change)
        return
    for other in merged:
        await uow.identity.add_alias(region, other, entity, cmd.change_id)
    target = await resolve(uow, region, entity)
    await _combine(
        uow,
        region,
        target,
        merged,
        change,
        notes,
        follows="the subject's entity was merged into another: the referral now follows the surviving entity",
    )
    await notes.finish(uow)
    await uow.identity.save(region, change)
    log.info("merge %s in %s: %s", cmd.change_id, region.value, _summary(change))


async def split_identity(cmd: commands.SplitIdentity, uow: SafeguardingUnitOfWork, now: datetime) -> None:
    region = cmd.region
    entity = subject_key(cmd.entity)
    change = IdentityChange(cmd.change_id, SPLIT, entity, undoes=cmd.undone_change, at=now)
    if not await uow.identity.claim(region, change):
        return
    notes = _Notes(region, cmd.event_id, f"Entity change {cmd.change_id} (split)", BY_SPLIT, now)
    undone = await uow.identity.get(region, cmd.undone_change) if cmd.undone_change else None
    if undone is not None and undone.kind == MERGE and not undone.undone_by:
        await _undo_merge(uow, region, undone, change, notes)
    else:
        # A referral's subject is never moved by a split: which records the referral rests on
        # is not known here. Its officer is told.
        moved = len(cmd.moved_records)
        what = (
            f"undid merge {cmd.undone_change}, which had joined nothing here"
            if cmd.undone_change
            else f"split the subject's entity: {moved} of this region's records on it moved to other entities"
        )
        for referral in await uow.referrals.open_about(region, spellings(await resolve(uow, region, entity))):
            notes.tell(
                referral, f"{what}; the subject is unchanged: review whether the referral still concerns it"
            )
            change.linked.append(referral.id)
    await notes.finish(uow)
    await uow.identity.save(region, change)
    log.info("split %s in %s: %s", cmd.change_id, region.value, _summary(change))


async def _undo_merge(
    uow: SafeguardingUnitOfWork, region: Region, merge: IdentityChange, change: IdentityChange, notes: _Notes
) -> None:
    """Put back what `merge` did where nothing changed it since: a referral it only moved gets
    its subject back (when no other open referral holds that subject for its concerns); one
    that took others in keeps its subject and both trails, and is told; closed referrals stay
    closed. Its aliases are forgotten."""
    await uow.identity.drop_aliases(region, merge.key)
    took: dict[str, list[str]] = defaultdict(list)
    for absorbed, into in merge.absorbed:
        took[into].append(referral_name(region, absorbed))
    for referral_id, before, after in merge.rekeyed:
        if referral_id in took:
            continue
        referral = await notes.load(uow, referral_id)
        if referral is None:
            continue
        if referral.subject.entity_id != after:
            notes.tell(
                referral, f"undid merge {merge.key}; the subject has changed since and is unchanged: review"
            )
            continue
        held = [await uow.referrals.find_open(region, before, concern) for concern in referral.concerns]
        holders = [h for h in held if h is not None and h.id != referral.id]
        if holders:
            notes.tell(
                referral,
                f"undid merge {merge.key}; the subject stays, as {_names(holders)} follows the entity it "
                "had before: review",
            )
            continue
        referral.follow_subject(before, now=notes.now)
        change.rekeyed.append((referral_id, after, before))
        notes.tell(
            referral,
            f"undid merge {merge.key}: the subject is again the entity it was before it; evidence "
            "added since may concern the other: review",
        )
    for into, names in took.items():
        referral = await notes.load(uow, into)
        if referral is not None:
            notes.tell(
                referral,
                f"undid merge {merge.key}, under which this referral took in {', '.join(names)}: its "
                "evidence may concern more than one person; the subject is unchanged (a referral closed "
                "as merged stays closed: draft again if needed): review",
            )
    for referral_id in merge.linked:
        referral = await notes.load(uow, referral_id)
        if referral is not None:
            notes.tell(
                referral, f"undid merge {merge.key}: the referrals it named as one person's may not be"
            )
    merge.undone_by = change.key
    await uow.identity.save(region, merge)


async def link_numbers(cmd: commands.LinkNumbers, uow: SafeguardingUnitOfWork, now: datetime) -> None:
    """Referrals raised on a bare number follow the person entity a record holding the
    number was linked to. A number already followed to another person is not moved again:
    the referrals raised on it are told, once per person, for an officer to review."""
    region = cmd.region
    entity = subject_key(cmd.entity)
    numbers = [k for k in dict.fromkeys(phone_subject(n) for n in cmd.numbers) if k]
    if not entity or entity.startswith(PHONE_PREFIX) or not numbers:
        return
    target = await resolve(uow, region, entity)
    label = f"Record {cmd.record} linked" if cmd.record else "A record linked"
    notes = _Notes(region, cmd.event_id, label, BY_LINK, now)
    fresh, taken = [], []
    for number in numbers:
        followed = await uow.identity.alias(region, number)
        if followed is None or await resolve(uow, region, followed) == target:
            fresh.append(number)
        else:
            taken.append(number)
    if fresh:
        change = IdentityChange("", LINK, entity, at=now)
        before = await _combine(
            uow,
            region,
            target,
            fresh,
            change,
            notes,
            follows="the number it was raised on belongs to a person entity: the referral now follows that entity",
        )
        raised_on = {s for s in before.values() if s in fresh}
        for number in sorted(raised_on):
            await uow.identity.add_alias(region, number, entity, number)
            done = IdentityChange(number, LINK, entity, at=now)
            done.rekeyed, done.absorbed, done.linked = (
                list(change.rekeyed),
                list(change.absorbed),
                list(change.linked),
            )
            await _remember(uow, region, done)
    for number in taken:
        linked = await uow.identity.get(region, number)
        if linked is None or not await uow.identity.claim(
            region, IdentityChange(f"{number}>{target}", NOTED, target)
        ):
            continue
        for referral_id in linked.touched():
            referral = await notes.load(uow, referral_id)
            if referral is not None:
                notes.tell(
                    referral,
                    "the number this referral was raised on is held by another person entity too: "
                    "review whether the referral concerns the entity it follows",
                )
    await notes.finish(uow)


async def _remember(uow: SafeguardingUnitOfWork, region: Region, change: IdentityChange) -> None:
    """Store `change`, adding to what its key holds already."""
    if await uow.identity.claim(region, change):
        return
    held = await uow.identity.get(region, change.key)
    assert held is not None
    held.rekeyed.extend(r for r in change.rekeyed if r not in held.rekeyed)
    held.absorbed.extend(a for a in change.absorbed if a not in held.absorbed)
    held.linked.extend(i for i in change.linked if i not in held.linked)
    await uow.identity.save(region, held)


def _summary(change: IdentityChange) -> str:
    return f"{len(change.rekeyed)} moved, {len(change.absorbed)} combined, {len(change.linked)} told"
