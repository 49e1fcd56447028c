"""Undoing a split (a person's or a re-resolution model's) with SplitEntity's `undo_change`,
through the handlers and the in-memory fakes: the records come back exactly and the entity
split off redirects, told as a merge naming the split; refused when the records have moved on
or a reviewer keeps them apart."""

from __future__ import annotations

from typing import Any

import pytest
from toex.entity.events.v1 import events_pb2 as ev
from toex_entity.domain import commands
from toex_entity.domain.model import ChangeKind, EntityState, PairDecision, PairVerdict, pair_key
from toex_entity.service_layer import handlers, reresolution
from toex_entity.service_layer.ports import Candidate
from toex_kernel.errors import FailedPrecondition, InvalidArgument, OutOfScope

from .fakes import FakeRepository, FakeUnitOfWork
from .test_handlers import EMSOU, ERSOU, copies, person, published, resolve


@pytest.fixture
def deps() -> handlers.Deps:
    uow = FakeUnitOfWork(FakeRepository())
    return handlers.Deps(uow=lambda: uow)  # type: ignore[arg-type,return-value]


def repo_of(deps: handlers.Deps) -> Any:
    return deps.uow().repo  # type: ignore[attr-defined]


async def three_of_one(deps: handlers.Deps) -> tuple[str, list[str]]:
    """One entity of three records of the same person (automatic links)."""
    results = await resolve(deps, EMSOU, person("a"), person("b"), person("c"))
    assert len({r.entity_id for r in results}) == 1
    return results[0].entity_id, [r.record_id for r in results]


async def model_split(deps: handlers.Deps, record_id: str) -> tuple[str, str]:
    """Re-resolution's split of one record: (change id, the entity split off)."""
    record = repo_of(deps).records[record_id]
    async with deps.uow() as uow:
        model = await deps.models.current(uow)
        change = await reresolution.split_off(
            uow,
            model,
            Candidate(record.id, record.entity_id, record.region, record.features),
            deps.clock(),
        )
        await uow.commit()
    return change.id, change.others[0]


async def undo(deps: handlers.Deps, entity_id: str, change_id: str, actor: Any = EMSOU) -> Any:
    return await handlers.split(commands.SplitEntity(actor, entity_id, [], change_id, "it was him"), deps)


async def test_a_models_split_undone_puts_the_record_back_and_is_told_as_a_merge(deps) -> None:  # type: ignore[no-untyped-def]
    entity, (a, b, c) = await three_of_one(deps)
    split_id, split_off = await model_split(deps, c)
    repo = repo_of(deps)
    assert repo.records[c].entity_id == split_off
    before = len(published(deps))

    kept, restored, change_id = await undo(deps, entity, split_id)

    assert sorted(r.id for r in kept.records) == sorted([a, b, c]) and restored == []
    assert kept.merged_ids == [split_off], "the entity split off redirects to the one it left"
    assert repo.entities[split_off].state is EntityState.MERGED
    change = repo.changes[change_id]
    assert (change.kind, change.undoes, change.others) == (ChangeKind.SPLIT_UNDONE, split_id, (split_off,))
    assert [(m.record_id, m.from_entity, m.to_entity) for m in change.moves] == [(c, split_off, entity)]
    assert repo.changes[split_id].undone_by == change_id
    # The relations the record took come back with it (and whatever is on the entity split off).
    assert deps.uow().relations.followed[-1] == ([split_off], entity)
    [(region, merged)] = copies(deps, before, ev.EntitiesMerged).items()
    assert region == "EMSOU" and merged.change_id == change_id and merged.undone_change == split_id
    assert list(merged.merged) == [f"entities/{split_off}"] and merged.entity == f"entities/{entity}"
    assert (merged.decided_by, merged.reason) == (EMSOU.username, "it was him")
    assert not copies(deps, before, ev.EntitySplit)

    with pytest.raises(FailedPrecondition, match="already undone"):
        await undo(deps, entity, split_id)


async def test_a_persons_split_undone_takes_its_own_kept_apart_decisions_with_it(deps) -> None:  # type: ignore[no-untyped-def]
    entity, (a, b, c) = await three_of_one(deps)
    region = repo_of(deps).records[c].region
    _, [split_view], split_id = await handlers.split(
        commands.SplitEntity(EMSOU, entity, [(region, c)], "", "not him"), deps
    )
    repo = repo_of(deps)
    assert set(repo.decisions) == {pair_key(c, a), pair_key(c, b)}, "the split keeps them apart"
    # MergeEntities would not rejoin them: the split's own decision stands in its way.
    with pytest.raises(FailedPrecondition):
        await handlers.merge(commands.MergeEntities(EMSOU, entity, [split_view.entity.id], "same"), deps)

    kept, _, change_id = await undo(deps, entity, split_id)

    assert sorted(r.id for r in kept.records) == sorted([a, b, c])
    assert repo.decisions == {}, "undoing the split undoes the decision it made"
    assert repo.changes[change_id].kind is ChangeKind.SPLIT_UNDONE


async def test_a_reviewers_kept_apart_made_after_the_split_refuses_the_undo(deps) -> None:  # type: ignore[no-untyped-def]
    entity, (a, _, c) = await three_of_one(deps)
    split_id, split_off = await model_split(deps, c)
    repo = repo_of(deps)
    x, y = pair_key(a, c)
    await repo.add_pair_decisions(
        [PairDecision(x, y, PairVerdict.DIFFERENT, "supervisor.emsou", "custody photos differ", deps.clock())]
    )
    with pytest.raises(FailedPrecondition, match=r"supervisor\.emsou kept records"):
        await undo(deps, entity, split_id)
    assert repo.records[c].entity_id == split_off and repo.changes[split_id].undone_by is None


async def test_a_persons_split_redecided_by_a_reviewer_is_not_undone(deps) -> None:  # type: ignore[no-untyped-def]
    entity, (a, _, c) = await three_of_one(deps)
    region = repo_of(deps).records[c].region
    _, _, split_id = await handlers.split(
        commands.SplitEntity(EMSOU, entity, [(region, c)], "", "not him"), deps
    )
    repo = repo_of(deps)
    x, y = pair_key(a, c)
    # A reviewer decides the pair again (the same verdict, their own decision now).
    await repo.add_pair_decisions(
        [PairDecision(x, y, PairVerdict.DIFFERENT, "supervisor.emsou", "checked again", deps.clock())]
    )
    with pytest.raises(FailedPrecondition, match="kept records"):
        await undo(deps, entity, split_id)
    assert repo.decisions[(x, y)].decided_by == "supervisor.emsou"


async def test_the_undo_is_refused_once_the_records_have_moved_on(deps) -> None:  # type: ignore[no-untyped-def]
    entity, (_, _, c) = await three_of_one(deps)
    split_id, split_off = await model_split(deps, c)
    [other] = await resolve(
        deps, EMSOU, person("z", given_name="Zed", surname="Quinn", birth_date="1960-01-01", addresses=())
    )
    # Another entity merged into the one split off: its records would be taken too.
    _, merge_id = await handlers.merge(
        commands.MergeEntities(EMSOU, split_off, [other.entity_id], "same"), deps
    )
    with pytest.raises(FailedPrecondition, match=r"linked to .* after the split"):
        await undo(deps, entity, split_id)
    # That merge undone, the entity split off merges into another: the record is no longer
    # where the split put it.
    await handlers.split(commands.SplitEntity(EMSOU, split_off, [], merge_id, "not the same"), deps)
    [third] = await resolve(
        deps, EMSOU, person("y", given_name="Yvonne", surname="Okafor", birth_date="1971-01-01", addresses=())
    )
    await handlers.merge(commands.MergeEntities(EMSOU, third.entity_id, [split_off], "same"), deps)
    with pytest.raises(FailedPrecondition, match="merged into another entity"):
        await undo(deps, entity, split_id)
    assert repo_of(deps).records[c].entity_id == third.entity_id


async def test_the_undo_names_the_entity_split_from_and_needs_sight_of_it(deps) -> None:  # type: ignore[no-untyped-def]
    entity, (_, _, c) = await three_of_one(deps)
    split_id, split_off = await model_split(deps, c)
    with pytest.raises(InvalidArgument):
        await undo(deps, split_off, split_id)
    with pytest.raises(OutOfScope):
        await undo(deps, entity, split_id, actor=ERSOU)
    assert repo_of(deps).changes[split_id].undone_by is None
    kept, _, _ = await undo(deps, entity, split_id)
    assert c in {r.id for r in kept.records}
