"""Job grants kept from tasking's events, through the bus and a real consumer: the highest
revision wins, a redelivery changes nothing, and a job of another region is refused."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from nats.aio.client import Client
from toex.tasking.events.v2 import events_pb2 as ev
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
