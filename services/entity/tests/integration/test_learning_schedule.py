"""Re-estimation on a schedule as well as by the record threshold, never two at once across
replicas, both visible in GetLearningStatus (real PostgreSQL, NATS, Keycloak; Splink in its own
process)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from toex.entity.v1 import entity_pb2 as pb
from toex_common.db import create_engine
from toex_entity import febrl
from toex_entity.adapters.learning_lock import EstimationLock
from toex_entity.adapters.tables import match_models
from toex_entity.service_layer import learning
from toex_kernel.timestamps import to_datetime

from .conftest import Running, Tokens
from .test_entity_service import md
from .test_model_learning import _service, resolve_csv

pytestmark = pytest.mark.integration


@pytest.fixture
async def service(database: str, nats_server, keycloak, tokens: Tokens) -> AsyncIterator[Running]:  # type: ignore[no-untyped-def]
    """The entity service as deployed, its learning worker not running: the test drives it."""
    async for running in _service(database, nats_server, keycloak, tokens, background=False):
        yield running


async def _status(service: Running) -> pb.GetLearningStatusResponse:
    return await service.stub.GetLearningStatus(
        pb.GetLearningStatusRequest(), metadata=md(service.token("analyst.emsou"), None)
    )


async def test_never_two_estimates_at_once_across_replicas(service: Running, tmp_path: Path) -> None:
    learner = service.app.learner
    assert learner is not None and learner.exclusive is not None
    (frame,), _ = febrl.load_frames("febrl1")
    await resolve_csv(service, frame, tmp_path / "febrl1.csv")

    # Another replica: its own connections to the same database, the same estimator.
    engine = create_engine(service.database, pool_size=2)
    other_lock = EstimationLock(engine)
    other = learning.Learner(service.app.deps, learner.estimate, learner.settings, exclusive=other_lock)
    try:
        first = asyncio.create_task(learner.reestimate())
        for _ in range(200):
            if await other_lock.held():
                break
            await asyncio.sleep(0.05)
        assert await other_lock.held(), "the first estimate never took the lock"
        # The other replica neither starts a second estimate nor waits for the first...
        assert await asyncio.wait_for(other.reestimate(), timeout=5) is None
        # ...and says one is running (its own worker is idle): so does the RPC.
        assert (await other.status()).estimating
        assert (await _status(service)).estimating
        activated = await first
        assert activated is not None
        assert not await other_lock.held()
        status = await _status(service)
        assert not status.estimating and status.estimate_trigger == "records"
        assert status.HasField("last_estimate_time")
        # Free again: the other replica may now estimate (nothing new: not due, but allowed).
        async with other_lock.hold() as mine:
            assert mine
    finally:
        await engine.dispose()


async def test_a_schedule_makes_an_estimate_due_when_a_record_is_new(
    service: Running, tmp_path: Path
) -> None:
    learner = service.app.learner
    assert learner is not None
    (frame,), _ = febrl.load_frames("febrl1")
    await resolve_csv(service, frame.iloc[:600], tmp_path / "first.csv")
    assert await learner.reestimate() is not None
    learner.settings = dataclasses.replace(learner.settings, schedule_seconds=3600)

    status = await _status(service)
    estimated = to_datetime(status.last_estimate_time)
    assert status.schedule.seconds == 3600
    assert to_datetime(status.next_scheduled_estimate_time) == estimated + timedelta(hours=1)
    assert not status.estimate_pending

    real_clock = service.app.deps.clock
    later = learning.Learner(
        dataclasses.replace(service.app.deps, clock=lambda: real_clock() + timedelta(hours=1, seconds=1)),
        learner.estimate,
        learner.settings,
    )
    # An hour on but nothing new: not due (the same records would give the same model).
    assert not (await later.status()).estimate_pending
    # Ten new records: far below the threshold (500), but the schedule makes it due.
    await resolve_csv(service, frame.iloc[600:610], tmp_path / "more.csv")
    assert not (await learner.status()).estimate_pending  # not yet an hour
    assert (await later.status()).estimate_pending
    await later.run_once()
    status = await later.status()
    assert status.estimate_trigger == "schedule"
    assert status.last_estimated_at is not None and status.last_estimated_at > estimated
    assert status.records_at_estimate == status.person_records
    # Every estimated model is kept, versioned, with its checks; one is active.
    engine = create_engine(service.database, pool_size=1)
    try:
        async with engine.connect() as conn:
            models = (
                await conn.execute(
                    select(
                        match_models.c.version,
                        match_models.c.status,
                        match_models.c.active,
                        match_models.c.checks,
                    )
                )
            ).all()
    finally:
        await engine.dispose()
    assert len(models) == 2 and len({m.version for m in models}) == 2
    assert [m.status for m in models if m.active] == ["ACTIVE"]
    assert {m.status for m in models if not m.active} <= {"RETIRED", "REJECTED"}
    assert all("passed" in m.checks and "agreed" in m.checks for m in models)
