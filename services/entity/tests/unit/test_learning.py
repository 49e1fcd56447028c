"""The learning worker's rules: when to re-estimate, and the checks a new model must pass."""

from __future__ import annotations

import dataclasses

from toex_entity.domain import matching
from toex_entity.domain.matching import LevelWeights, MatchModel
from toex_entity.domain.records import Address, PersonData
from toex_entity.service_layer import handlers, learning
from toex_entity.service_layer.handlers import default_model

from .fakes import FakeRepository, FakeUnitOfWork

SETTINGS = learning.LearningSettings(min_new_records=500, growth=0.1)


def _deps() -> handlers.Deps:
    uow = FakeUnitOfWork(FakeRepository())
    return handlers.Deps(uow=lambda: uow)  # type: ignore[arg-type,return-value]


def test_due_needs_both_enough_records_and_enough_growth() -> None:
    assert learning.due(500, 0, SETTINGS)
    assert not learning.due(499, 0, SETTINGS)
    # 600 new on 10,000 is 6%: not yet; 1,000 new is 10%.
    assert not learning.due(10_600, 10_000, SETTINGS)
    assert learning.due(11_000, 10_000, SETTINGS)


def test_the_shipped_model_is_sane() -> None:
    assert learning.sane_parameters(default_model()) == []


def _with(model: MatchModel, name: str, index: int, weights: LevelWeights) -> MatchModel:
    levels = dict(model.levels)
    changed = list(levels[name])
    changed[index] = weights
    levels[name] = tuple(changed)
    return dataclasses.replace(model, levels=levels, version="changed")


def test_insane_parameters_are_named() -> None:
    model = default_model()
    first_seen = next(i for i, w in enumerate(model.levels["surname"]) if w is not None)
    inverted = _with(model, "surname", first_seen, LevelWeights(0.01, 0.5))
    assert any("surname" in p for p in learning.sane_parameters(inverted))
    assert learning.sane_parameters(dataclasses.replace(model, prior=0.7))


def _features(given: str, surname: str, dob: str = "") -> matching.Features:
    return matching.person_features(
        PersonData(given_name=given, surname=surname, birth_date=dob, addresses=(Address((), "", "S40 1AA"),))
    )


def test_a_model_that_agrees_less_with_reviewers_fails() -> None:
    active = default_model()
    same = _features("Kayleigh", "Morris", "2007-11-02")
    # A reviewer kept these apart (sisters at one address, one date of birth missing).
    rejected = ("DIFFERENT", same, _features("Jade", "Morris"))
    assert matching.score(active, rejected[1], rejected[2]).probability < active.thresholds.auto_link
    # A model that trusts a name match far more links them: it fails on that decision.
    credulous = dataclasses.replace(active, prior=0.2, version="credulous")
    passed, checks = learning.check_model(credulous, active, [rejected])
    assert not passed
    assert checks["agreed"] == 0 and checks["agreed_by_active"] == 1
    # The same model, with no decision against it, passes.
    assert learning.check_model(active, active, [])[0]


def test_a_schedule_makes_an_estimate_due_only_when_old_enough_and_something_is_new() -> None:
    from datetime import UTC, datetime, timedelta

    daily = learning.LearningSettings(min_new_records=500, growth=0.1, schedule_seconds=86_400)
    estimated = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    state = {"records_at_estimate": 10_000, "estimated_at": estimated}
    day_later = estimated + timedelta(days=1)
    assert learning.why_due(10_010, state, day_later, daily) == "schedule"
    assert learning.why_due(10_010, state, day_later - timedelta(seconds=1), daily) == ""
    assert learning.why_due(10_000, state, day_later, daily) == ""  # nothing new: the same model
    assert learning.why_due(11_000, state, estimated, daily) == "records"  # the threshold, any time
    assert learning.next_scheduled(estimated, daily) == day_later
    # No schedule, or never estimated: only the threshold.
    assert learning.why_due(10_010, state, day_later, SETTINGS) == ""
    assert learning.why_due(100, {"records_at_estimate": 0, "estimated_at": None}, day_later, daily) == ""


async def test_one_process_never_runs_two_estimates_at_once() -> None:
    import asyncio

    started = asyncio.Event()
    release = asyncio.Event()
    calls = 0

    async def slow_estimate(cap: int) -> tuple[MatchModel, int]:
        nonlocal calls
        calls += 1
        started.set()
        await release.wait()
        raise RuntimeError("no model")  # the estimate fails: nothing to activate

    learner = learning.Learner(_deps(), slow_estimate, SETTINGS)
    first = asyncio.create_task(learner.reestimate())
    await started.wait()
    assert learner.estimating
    assert await learner.reestimate() is None  # returns at once, starts nothing
    release.set()
    assert await first is None
    assert calls == 1 and not learner.estimating
