"""A model that keeps learning from the stored records, and re-resolution under a new model.

The learning worker (run in the background by the service, `entrypoints` wiring) does, each
time it wakes:

1. **Re-estimation when enough has changed**: when the person records stored since the last
   estimate reach `min_new_records` and `growth` of what that estimate saw, at most
   `sample_cap` records of the person sample kept as records are written (domain/sample.py)
   go to the estimator (Splink, in a separate low-priority process with one DuckDB thread and
   a memory limit, so resolution is never blocked).
2. **Checks** before the new model becomes active (`check_model`): sane parameters, and
   agreement with reviewers' decisions at least that of the active model. Every model is kept
   (`match_models`), activated or rejected, with its checks.
3. **Re-resolution**: when a model becomes active, every person record is scored again
   against its blocking candidates, in id order, a batch per transaction with a persisted
   cursor (a stop resumes where it was). A record that the new model links automatically to
   a record of another entity of its region merges the two entities (reversibly, as any merge:
   `SplitEntity --undo`), decided by `model:<version>`, unless a reviewer kept any of their
   records apart.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from toex_entity.domain import matching, sample
from toex_entity.domain.matching import Features, MatchModel
from toex_entity.domain.model import PairVerdict
from toex_entity.service_layer import reresolution
from toex_entity.service_layer.handlers import Deps, default_model

log = logging.getLogger(__name__)

# Estimates a model from at most this many stored records; returns it and how many it saw.
Estimator = Callable[[int], Awaitable[tuple[MatchModel, int]]]

ADDRESS_KEY_PREFIXES = ("at:", "ap:", "st:")
# Reviewer decisions the checks compare models on (the most recent are enough).
MAX_REVIEWER_PAIRS = 20_000


@dataclass(frozen=True)
class LearningSettings:
    # Re-estimate once this many person records are new since the last estimate...
    min_new_records: int = 500
    # ...and they are at least this share of what the last estimate saw.
    growth: float = 0.1
    # At most this many stored records go to the estimator (bounds its time and memory).
    sample_cap: int = sample.DEFAULT_CAP
    # Records re-resolved per transaction (the resolution lock is held for one batch).
    batch: int = 500
    # Re-estimate also on a schedule: once the last estimate is this old (seconds; 0: never),
    # if at least `schedule_min_new_records` person records are new since it.
    schedule_seconds: float = 0.0
    schedule_min_new_records: int = 1
    # Records re-resolution reads per transaction (only those whose pairs can score
    # differently: service_layer/reresolution.py).
    reresolve_batch: int = 2000


@dataclass
class LearningStatus:
    person_records: int
    records_at_estimate: int
    estimate_pending: bool
    estimating: bool
    active_model: str
    reresolve_model: str
    reresolve_scanned: int
    reresolve_merged: int
    reresolve_done: bool
    last_rejected: str = ""
    reresolve_split: int = 0
    # What started the running (or last) estimate: "records" (the threshold) or "schedule".
    estimate_trigger: str = ""
    last_estimated_at: datetime | None = None
    # When the schedule next makes an estimate due (None: no schedule, or never estimated).
    next_scheduled_at: datetime | None = None
    schedule_seconds: float = 0.0

    @property
    def settled(self) -> bool:
        return not self.estimate_pending and not self.estimating and self.reresolve_done


def due(count: int, at_estimate: int, settings: LearningSettings) -> bool:
    new = count - at_estimate
    return new >= settings.min_new_records and new >= settings.growth * at_estimate


def next_scheduled(estimated_at: datetime | None, settings: LearningSettings) -> datetime | None:
    if settings.schedule_seconds <= 0 or estimated_at is None:
        return None  # the first estimate waits for the record threshold
    return estimated_at + timedelta(seconds=settings.schedule_seconds)


def why_due(count: int, state: dict[str, Any], now: datetime, settings: LearningSettings) -> str:
    """Why a re-estimation is due: "records" (enough new), "schedule" (the last estimate is old
    enough and something is new), or "" (not due)."""
    at_estimate = int(state["records_at_estimate"])
    if due(count, at_estimate, settings):
        return "records"
    scheduled = next_scheduled(state.get("estimated_at"), settings)
    if (
        scheduled is not None
        and now >= scheduled
        and count - at_estimate >= settings.schedule_min_new_records
    ):
        return "schedule"
    return ""


class ExclusiveRun(Protocol):
    """At most one estimate at a time across replicas (adapters/learning_lock.py)."""

    def hold(self) -> AbstractAsyncContextManager[bool]: ...

    async def held(self) -> bool: ...


# --- checks ----------------------------------------------------------------------------


def sane_parameters(model: MatchModel) -> list[str]:
    """Problems with a model's parameters (empty: sane). A level never seen in training is
    neutral (m = u = 1) and allowed."""
    problems: list[str] = []
    if not 0.0 < model.prior < 0.5:
        problems.append(f"prior {model.prior:.3g} outside (0, 0.5)")
    for name, levels in model.levels.items():
        seen = [w for w in levels if w is not None and not (w.m == 1.0 and w.u == 1.0)]
        for w in seen:
            if not (0.0 < w.m <= 1.0 and 0.0 < w.u <= 1.0):
                problems.append(f"{name}: m {w.m:.3g} / u {w.u:.3g} not probabilities")
        if seen and seen[0].m <= seen[0].u:
            problems.append(
                f"{name}: its closest level does not favour a match (m {seen[0].m:.3g} <= u {seen[0].u:.3g})"
            )
        if len(seen) > 1 and seen[-1].m > seen[-1].u:
            problems.append(f"{name}: disagreement favours a match (m {seen[-1].m:.3g} > u {seen[-1].u:.3g})")
    return problems


def reviewer_agreement(model: MatchModel, pairs: list[tuple[str, Features, Features]]) -> int:
    """How many reviewer decisions the model agrees with: a confirmed pair scores at least the
    review threshold; a rejected pair scores below auto-link."""
    agreed = 0
    for verdict, a, b in pairs:
        p = matching.score(model, a, b, detail=False).probability
        if verdict == PairVerdict.SAME.value:
            agreed += p >= model.thresholds.review
        else:
            agreed += p < model.thresholds.auto_link
    return agreed


def check_model(
    candidate: MatchModel, active: MatchModel, pairs: list[tuple[str, Features, Features]]
) -> tuple[bool, dict[str, Any]]:
    problems = sane_parameters(candidate)
    new_agreed = reviewer_agreement(candidate, pairs)
    old_agreed = reviewer_agreement(active, pairs)
    if new_agreed < old_agreed:
        problems.append(
            f"agrees with {new_agreed} of {len(pairs)} reviewer decisions, the active model with {old_agreed}"
        )
    checks = {
        "passed": not problems,
        "problems": problems,
        "reviewer_decisions": len(pairs),
        "agreed": new_agreed,
        "agreed_by_active": old_agreed,
        "active_model": active.version,
    }
    return not problems, checks


# --- the worker ------------------------------------------------------------------------


@dataclass
class Learner:
    deps: Deps
    estimate: Estimator
    settings: LearningSettings = field(default_factory=LearningSettings)
    estimating: bool = False
    last_rejected: str = ""
    # Without it, only this process is kept from starting a second estimate.
    exclusive: ExclusiveRun | None = None
    last_trigger: str = ""

    async def status(self) -> LearningStatus:
        async with self.deps.uow() as uow:
            count = await uow.repo.count_person_records()
            state = await uow.repo.learning_state()
            active = await self.deps.models.current(uow)
        elsewhere = self.exclusive is not None and not self.estimating and await self.exclusive.held()
        return LearningStatus(
            person_records=count,
            records_at_estimate=int(state["records_at_estimate"]),
            estimate_pending=bool(why_due(count, state, self.deps.clock(), self.settings)),
            estimating=self.estimating or elsewhere,
            active_model=active.version,
            reresolve_model=state["reresolve_model"],
            reresolve_scanned=int(state["reresolve_scanned"]),
            reresolve_merged=int(state["reresolve_merged"]),
            reresolve_done=bool(state["reresolve_done"]),
            last_rejected=self.last_rejected,
            reresolve_split=int(state.get("reresolve_split", 0)),
            estimate_trigger=self.last_trigger,
            last_estimated_at=state.get("estimated_at"),
            next_scheduled_at=next_scheduled(state.get("estimated_at"), self.settings),
            schedule_seconds=self.settings.schedule_seconds,
        )

    async def run_once(self) -> None:
        """Refresh the active model (another replica may have changed it), re-estimate if
        due, then re-resolve until done."""
        async with self.deps.uow() as uow:
            stored = await uow.repo.active_model()
            count = await uow.repo.count_person_records()
            state = await uow.repo.learning_state()
        if stored is not None and (
            self.deps.models.model is None or self.deps.models.model.version != stored.version
        ):
            self.deps.models.model = stored
        trigger = why_due(count, state, self.deps.clock(), self.settings)
        if trigger:
            await self.reestimate(trigger)
        while not await self.reresolve_step():
            pass

    async def reestimate(self, trigger: str = "records") -> MatchModel | None:
        """Estimate a model from the stored records; activate it if it passes its checks.
        Returns the model activated, or None. Never two at once: not while this process
        estimates, nor while another replica does (it then returns None at once)."""
        if self.estimating:
            return None
        self.estimating = True
        try:
            hold = self.exclusive.hold() if self.exclusive is not None else contextlib.nullcontext(True)
            async with hold as mine:
                if not mine:
                    log.info("another replica is re-estimating the model: not starting a second estimate")
                    return None
                self.last_trigger = trigger
                return await self._reestimate()
        finally:
            self.estimating = False

    async def _reestimate(self) -> MatchModel | None:
        self.estimating = True
        try:
            async with self.deps.uow() as uow:
                count = await uow.repo.count_person_records()
            active_before = self.deps.models.model
            seen = 0
            try:
                candidate, seen = await self.estimate(self.settings.sample_cap)
            except Exception:  # too few records, or Splink could not estimate: try on more
                log.exception("re-estimation on %d stored records failed", count)
                candidate = None
            # The checks score every reviewer decision under both models: done before the
            # resolution lock is taken, so resolution never waits for them.
            checked: tuple[str, bool, dict[str, Any]] | None = None
            if candidate is not None:
                checked = await self._check(candidate)
            async with self.deps.uow() as uow:
                await uow.lock_resolution()
                now = self.deps.clock()
                state = await uow.repo.learning_state()
                if int(state["records_at_estimate"]) >= count:
                    # Another replica estimated on as many records meanwhile: its model stands.
                    log.info("re-estimation on %d records superseded by another replica's", count)
                    return None
                state["records_at_estimate"] = count
                state["estimated_at"] = now
                activated: MatchModel | None = None
                if candidate is not None and checked is not None:
                    active = await self.deps.models.current(uow)
                    if active.version != checked[0]:  # the active model changed meanwhile: check again
                        pairs = await uow.repo.reviewer_pairs(MAX_REVIEWER_PAIRS)
                        checked = (active.version, *check_model(candidate, active, pairs))
                    _, passed, checks = checked
                    if candidate.version == active.version:
                        passed = False
                        checks["problems"].append("the same parameters as the active model")
                    await uow.repo.save_model_outcome(
                        candidate, now, activate=passed, checks=checks, records_seen=seen
                    )
                    if passed:
                        activated = candidate
                        state.update(
                            reresolve_model=candidate.version,
                            reresolve_from=active.version,
                            reresolve_cursor="",
                            reresolve_scanned=0,
                            reresolve_merged=0,
                            reresolve_split=0,
                            reresolve_done=False,
                        )
                        log.info("model %s active (re-estimated on %d records)", candidate.version, seen)
                    else:
                        self.last_rejected = candidate.version
                        log.warning("model %s rejected: %s", candidate.version, "; ".join(checks["problems"]))
                await uow.repo.save_learning_state(state, now)
                await uow.commit()
            if activated is not None and self.deps.models.model is active_before:
                self.deps.models.model = activated
            return activated
        finally:
            self.estimating = False

    async def _check(self, candidate: MatchModel) -> tuple[str, bool, dict[str, Any]]:
        """The candidate's checks against the active model (outside the resolution lock);
        with the active model's version they were made against."""
        async with self.deps.uow() as uow:
            active = await self.deps.models.current(uow)
            pairs = await uow.repo.reviewer_pairs(MAX_REVIEWER_PAIRS)
        return (active.version, *check_model(candidate, active, pairs))

    async def _replaced(self, uow: Any, version: str) -> MatchModel | None:
        """The model a re-resolution replaces (stored, or the one shipped); None: unknown, so
        every record is read."""
        if not version:
            return None
        stored = await uow.repo.model(version)
        if stored is None and default_model().version == version:
            return default_model()
        return stored

    async def reresolve_step(self) -> bool:
        """Re-resolve one batch of person records under the active model; True when done."""
        async with self.deps.uow() as uow:
            await uow.lock_resolution()
            state = await uow.repo.learning_state()
            if state["reresolve_done"]:
                return True
            model = await uow.repo.active_model()
            if model is None or model.version != state["reresolve_model"]:
                # A newer model started its own re-resolution, or none is stored: nothing to do.
                state["reresolve_done"] = model is None
                if model is not None:
                    state.update(
                        reresolve_model=model.version,
                        reresolve_from="",
                        reresolve_cursor="",
                        reresolve_scanned=0,
                    )
                await uow.repo.save_learning_state(state, self.deps.clock())
                await uow.commit()
                return model is None
            now = self.deps.clock()
            old = await self._replaced(uow, state.get("reresolve_from", ""))
            spec = reresolution.selection(old, model)
            if spec.nothing:
                done = reresolution.BatchOutcome()
            else:
                done = await reresolution.reresolve_batch(
                    uow, model, spec, state["reresolve_cursor"], self.settings.reresolve_batch, now
                )
            if not done.read:
                state["reresolve_done"] = True
                await uow.repo.save_learning_state(state, now)
                await uow.commit()
                log.info(
                    "re-resolution under model %s done: %d records read, %d merges, %d splits",
                    model.version,
                    state["reresolve_scanned"],
                    state["reresolve_merged"],
                    state.get("reresolve_split", 0),
                )
                return True
            state["reresolve_cursor"] = done.last_id
            state["reresolve_scanned"] = int(state["reresolve_scanned"]) + done.read
            state["reresolve_merged"] = int(state["reresolve_merged"]) + done.merged
            state["reresolve_split"] = int(state.get("reresolve_split", 0)) + done.split
            await uow.repo.save_learning_state(state, now)
            await uow.commit()
            return False
