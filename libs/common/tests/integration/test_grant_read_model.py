"""Job grants kept from tasking's events, through the bus and a real consumer: the highest
revision wins, a redelivery changes nothing, and a job of another region is refused."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.client import Client
from toex.tasking.events.v2 import events_pb2 as ev
from toex_common import grants
from toex_common.db import session_factory
from toex_common.events import build_event
from toex_common.events.bus import MessageBus
from toex_common.events.consumer import IdempotentConsumer, Outcome
from toex_common.grants import grants_metadata, subscribe
from toex_common.uow import SqlAlchemyUnitOfWork
from toex_kernel.grants import JobGrant
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration


def access(revision: int, state: int, *holders: str, collaborating: tuple[Region, ...] = ()) -> ev.JobAccess:
    return ev.JobAccess(
        revision=revision,
        state=state,  # type: ignore[arg-type]
        assignees=[ev.Assignee(username=h) for h in holders],
        collaborating_regions=[r.to_proto() for r in collaborating],  # type: ignore[misc]
    )


async def publish(nc: Client, message: Any, region: Region) -> None:
    envelope = build_event(message, domain="tasking", source="test", region=region)
    await nc.jetstream().publish(envelope.subject, envelope.payload, headers=dict(envelope.headers))


async def test_grants_follow_the_jobs_revisions_through_a_real_consumer(engine, nc) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(grants_metadata.create_all)
    sessions = session_factory(engine)
    bus = MessageBus()
    service = f"t{uuid.uuid4().hex[:6]}"
    subscribe(bus, service)
    [consumer] = bus.consumers(
        lambda **config: IdempotentConsumer(nc=nc, js=nc.jetstream(), **config),
        lambda: SqlAlchemyUnitOfWork(sessions),
    )
    await consumer.setup()  # declares the producer's stream: tasking has not started
    job = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    other = f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}"
    await publish(nc, ev.JobCreated(job=job, access=access(1, ev.JOB_STATE_RAISED)), Region.EMSOU)
    await publish(
        nc, ev.JobAssigned(job=job, access=access(2, ev.JOB_STATE_ASSIGNED, "researcher.emsou")), Region.EMSOU
    )
    await publish(
        nc,
        ev.JobReassigned(job=job, access=access(3, ev.JOB_STATE_ASSIGNED, "researcher.london")),
        Region.EMSOU,
    )
    # An event overtaken by a later one (delivered late, say) does not bring the old holder back.
    await publish(
        nc, ev.JobAssigned(job=job, access=access(2, ev.JOB_STATE_ASSIGNED, "researcher.emsou")), Region.EMSOU
    )
    # An ERSOU subject naming an EMSOU job is refused: one region cannot grant another's material.
    await publish(
        nc,
        ev.JobAssigned(job=other, access=access(1, ev.JOB_STATE_ASSIGNED, "researcher.ersou")),
        Region.ERSOU,
    )

    async def grant(name: str) -> JobGrant | None:
        async with SqlAlchemyUnitOfWork(sessions) as uow:
            return await uow.grants.of_job(name)

    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        expected = JobGrant(job, Region.EMSOU, frozenset({"researcher.london"}), True)
        # Wait for this test's events, not a count: the session's stream may hold other tests'.
        for _ in range(150):
            if await grant(job) == expected and consumer.counts[Outcome.DEAD_LETTERED] >= 1:
                break
            await asyncio.sleep(0.1)
        assert await grant(job) == expected
        assert await grant(other) is None
        assert consumer.counts[Outcome.DEAD_LETTERED] == 1

        # UpdateJob names a collaborating region: its supervisors are readers from then on.
        updated = ev.JobUpdated(
            job=job,
            access=access(4, ev.JOB_STATE_ASSIGNED, "researcher.london", collaborating=(Region.ERSOU,)),
        )
        await publish(nc, updated, Region.EMSOU)
        for _ in range(100):
            found = await grant(job)
            if found is not None and found.collaborators:
                break
            await asyncio.sleep(0.1)
        assert await grant(job) == JobGrant(
            job, Region.EMSOU, frozenset({"researcher.london"}), True, frozenset({Region.ERSOU})
        )

        await publish(
            nc,
            ev.JobStatusChanged(job=job, access=access(5, ev.JOB_STATE_CLOSED, "researcher.london")),
            Region.EMSOU,
        )
        for _ in range(100):
            found = await grant(job)
            if found is not None and not found.open:
                break
            await asyncio.sleep(0.1)
        closed = await grant(job)
        assert closed is not None and not closed.open
        async with SqlAlchemyUnitOfWork(sessions) as uow:
            assert await uow.grants.for_purpose(f"EMSOU/{job.rsplit('/', 1)[1]}") == closed
            assert await uow.grants.for_purpose("Op Kestrel") is None
    finally:
        stop.set()
        await task


async def test_a_fetched_batch_is_kept_in_one_statement_with_the_later_revision_winning(
    engine, nc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's prefetch stores the batch's access at once (`store_accesses`); the handlers
    then have nothing left to do, and a job named twice in the batch keeps its later revision
    whatever the order."""
    async with engine.begin() as conn:
        await conn.run_sync(grants_metadata.create_all)
    sessions = session_factory(engine)
    one_at_a_time: list[str] = []
    real_store_access = grants.store_access

    async def counted(session: Any, job: str, region: Region, message: ev.JobAccess) -> None:
        one_at_a_time.append(job)
        await real_store_access(session, job, region, message)

    monkeypatch.setattr(grants, "store_access", counted)
    bus = MessageBus()
    subscribe(bus, f"t{uuid.uuid4().hex[:6]}")
    [consumer] = bus.consumers(
        lambda **config: IdempotentConsumer(nc=nc, js=nc.jetstream(), **config),
        lambda: SqlAlchemyUnitOfWork(sessions),
    )
    await consumer.setup()
    # Earlier tests' events first (one of them is refused, which sends its batch one event at a
    # time): this test's events then come in a batch of their own.
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(150):
            info = await nc.jetstream().consumer_info("TASKING", consumer.name)
            if info.num_pending == 0 and info.num_ack_pending == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    one_at_a_time.clear()
    refused = consumer.counts[Outcome.DEAD_LETTERED]
    jobs = [f"regions/EMSOU/jobs/{uuid.uuid4().hex[:12]}" for _ in range(3)]
    batch = [
        ev.JobCreated(job=jobs[0], access=access(1, ev.JOB_STATE_RAISED)),
        ev.JobReassigned(job=jobs[0], access=access(3, ev.JOB_STATE_ASSIGNED, "researcher.london")),
        # Overtaken in the same batch: does not bring the old holder back.
        ev.JobAssigned(job=jobs[0], access=access(2, ev.JOB_STATE_ASSIGNED, "researcher.emsou")),
        ev.JobAssigned(job=jobs[1], access=access(2, ev.JOB_STATE_ASSIGNED, "researcher.emsou")),
        ev.JobStatusChanged(job=jobs[2], access=access(5, ev.JOB_STATE_CLOSED, "researcher.se")),
    ]
    for message in batch:
        await publish(nc, message, Region.EMSOU)

    async def grant(name: str) -> JobGrant | None:
        async with SqlAlchemyUnitOfWork(sessions) as uow:
            return await uow.grants.of_job(name)

    expected = {
        jobs[0]: JobGrant(jobs[0], Region.EMSOU, frozenset({"researcher.london"}), True),
        jobs[1]: JobGrant(jobs[1], Region.EMSOU, frozenset({"researcher.emsou"}), True),
        jobs[2]: JobGrant(jobs[2], Region.EMSOU, frozenset({"researcher.se"}), False),
    }
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    try:
        for _ in range(150):
            if all([await grant(job) == want for job, want in expected.items()]):
                break
            await asyncio.sleep(0.1)
        assert {job: await grant(job) for job in jobs} == expected
        assert consumer.counts[Outcome.DEAD_LETTERED] == refused
        # The session's stream may hold other tests' events: only this test's jobs are asked about.
        assert not set(one_at_a_time) & set(jobs), "the batch was stored one event at a time"
    finally:
        stop.set()
        await task
