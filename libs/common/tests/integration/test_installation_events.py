"""An installation's consumers and outbox against real PostgreSQL and nats-server: a region
installation's consumer reads only its region's events on a stream every region publishes to
(the hub's streams source every region's); a durable consumer whose installation changes keeps
its place; a unit of work publishes nothing for a region the installation does not serve."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy import func, select
from toex.tasking.events.v1 import events_pb2
from toex_common.config import ServiceSettings
from toex_common.db import outbox_table, session_factory
from toex_common.events import StreamSpec, build_event, ensure_stream
from toex_common.events.bus import EVERY_REGION, MessageBus
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.nats import connect
from toex_common.events.streams import TASKING_STREAM
from toex_common.installation import InstallationError, OutsideInstallation, bind_publisher
from toex_common.service import Platform
from toex_common.uow import DriverUnitOfWork, SqlAlchemyUnitOfWork
from toex_kernel.installation import Installation
from toex_kernel.regions import Region

pytestmark = pytest.mark.integration

LONDON = Installation.of("region", "LONDON")
SINGLE = Installation.single()


@pytest.fixture
async def nc(nats_server) -> AsyncIterator[Client]:
    client = await connect(nats_server.url, "test")
    yield client
    await client.close()


@pytest.fixture
async def stream(nc: Client) -> StreamSpec:
    domain = f"t{uuid.uuid4().hex[:8]}"
    spec = StreamSpec.for_domain(domain.upper(), domain)
    await ensure_stream(nc.jetstream(), spec)
    return spec


def platform(installation: Installation, engine: Any, nc: Client) -> Platform:
    """The platform's consumer factory for an installation (no audit log or verifier needed)."""
    return Platform(ServiceSettings(), engine, nc, nc.jetstream(), None, None, installation=installation)  # type: ignore[arg-type]


async def publish(nc: Client, domain: str, regions: list[Region]) -> list[str]:
    """One event per region named, in order; their job names."""
    jobs = []
    for region in regions:
        job = f"regions/{region.value}/jobs/{uuid.uuid4().hex[:8]}"
        event = build_event(events_pb2.FeedbackRecorded(job=job), domain=domain, source="test", region=region)
        await nc.jetstream().publish(event.subject, event.payload, headers=event.headers)
        jobs.append(job)
    return jobs


def recording(seen: list[str]) -> Any:
    async def handler(event: Any, uow: Any) -> None:
        seen.append(event.message.job)

    return handler


async def consume(consumer: IdempotentConsumer, seen: list[str], count: int, settle: float = 1.0) -> None:
    """Run until `count` events were handled, then a little longer (an event that should not
    come would come then), and stop."""
    stop = asyncio.Event()
    task = asyncio.create_task(consumer.run(stop))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 15
    while loop.time() < deadline and len(seen) < count:
        await asyncio.sleep(0.05)
    await asyncio.sleep(settle)
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_a_region_installations_consumer_reads_only_its_regions_events(engine, nc, stream) -> None:
    domain = stream.subjects[0].split(".")[2]
    sessions = session_factory(engine)
    jobs = await publish(
        nc, domain, [Region.EMSOU, Region.LONDON, Region.NATIONAL, Region.LONDON, Region.ERSOU]
    )
    london_jobs = [job for job in jobs if job.startswith("regions/LONDON/")]
    seen: list[str] = []
    consumer = platform(LONDON, engine, nc).consumer(
        uow_factory=lambda: SqlAlchemyUnitOfWork(sessions),
        name=f"c{uuid.uuid4().hex[:8]}",
        stream=stream,
        subjects=[f"toex.*.{domain}.FeedbackRecorded"],
        handler=recording(seen),
    )
    await consume(consumer, seen, len(london_jobs))
    assert seen == london_jobs
    info = await nc.jetstream().consumer_info(stream.name, consumer.name)
    assert info.config.filter_subject == f"toex.london.{domain}.FeedbackRecorded"
    # a single installation's consumer on the same stream reads every region's
    every: list[str] = []
    single = platform(SINGLE, engine, nc).consumer(
        uow_factory=lambda: SqlAlchemyUnitOfWork(sessions),
        name=f"c{uuid.uuid4().hex[:8]}",
        stream=stream,
        subjects=[f"toex.*.{domain}.FeedbackRecorded"],
        handler=recording(every),
    )
    await consume(single, every, len(jobs), settle=0.3)
    assert every == jobs


async def test_a_durable_consumer_whose_installation_changes_keeps_its_place(engine, nc, stream) -> None:
    """A single installation turned into LONDON's: its durable consumers are updated in place
    (their filter narrowed), read on from where they were, and never read another region's."""
    domain = stream.subjects[0].split(".")[2]
    sessions = session_factory(engine)
    name = f"c{uuid.uuid4().hex[:8]}"

    def consumer(installation: Installation, seen: list[str]) -> IdempotentConsumer:
        return platform(installation, engine, nc).consumer(
            uow_factory=lambda: SqlAlchemyUnitOfWork(sessions),
            name=name,
            stream=stream,
            subjects=[f"toex.*.{domain}.FeedbackRecorded", f"toex.*.{domain}.JobClosed"],
            handler=recording(seen),
        )

    before = await publish(nc, domain, [Region.EMSOU, Region.LONDON])
    seen_single: list[str] = []
    await consume(consumer(SINGLE, seen_single), seen_single, 2, settle=0.3)
    assert seen_single == before

    after = await publish(nc, domain, [Region.EMSOU, Region.LONDON, Region.EMSOU, Region.LONDON])
    seen_london: list[str] = []
    await consume(consumer(LONDON, seen_london), seen_london, 2)
    assert seen_london == [after[1], after[3]]
    info = await nc.jetstream().consumer_info(stream.name, name)
    assert sorted(info.config.filter_subjects or []) == [
        f"toex.london.{domain}.FeedbackRecorded",
        f"toex.london.{domain}.JobClosed",
    ]


async def test_a_durable_the_server_cannot_update_is_replaced_after_its_acknowledged_floor(
    engine, nc, stream
) -> None:
    """A durable made with settings the server will not change in place (here an older ack
    policy) is replaced by one reading on after its acknowledged floor: nothing acknowledged is
    read again, nothing after it is lost."""
    domain = stream.subjects[0].split(".")[2]
    js = nc.jetstream()
    name = f"c{uuid.uuid4().hex[:8]}"
    jobs = await publish(nc, domain, [Region.LONDON] * 5)
    await js.add_consumer(
        stream.name,
        ConsumerConfig(
            durable_name=name, ack_policy=AckPolicy.ALL, filter_subject=f"toex.*.{domain}.FeedbackRecorded"
        ),
    )
    old = await js.pull_subscribe_bind(durable=name, stream=stream.name)
    first = await old.fetch(2, timeout=5)
    await first[-1].ack_sync()  # AckPolicy.ALL: the first two are acknowledged
    await old.unsubscribe()

    seen: list[str] = []
    sessions = session_factory(engine)
    replacement = platform(LONDON, engine, nc).consumer(
        uow_factory=lambda: SqlAlchemyUnitOfWork(sessions),
        name=name,
        stream=stream,
        subjects=[f"toex.*.{domain}.FeedbackRecorded"],
        handler=recording(seen),
    )
    await consume(replacement, seen, 3)
    assert seen == jobs[2:]
    info = await js.consumer_info(stream.name, name)
    assert info.config.ack_policy == AckPolicy.EXPLICIT
    assert info.config.filter_subject == f"toex.london.{domain}.FeedbackRecorded"


@pytest.mark.parametrize("driver", [False, True], ids=["sqlalchemy", "driver"])
async def test_a_region_installation_stores_no_event_for_another_region(engine, driver: bool) -> None:
    """The outbox's guard: a unit of work that would publish another region's event is refused
    at commit, and nothing of it (state or event) is stored."""
    bind_publisher(engine, LONDON)
    try:
        sessions = session_factory(engine)

        def unit() -> Any:
            return DriverUnitOfWork(engine) if driver else SqlAlchemyUnitOfWork(sessions)

        def event(region: Region) -> Any:
            job = f"regions/{region.value}/jobs/x"
            return build_event(
                events_pb2.FeedbackRecorded(job=job), domain="tasking", source="t", region=region
            )

        async with unit() as uow:
            uow.publish(event(Region.LONDON))
            uow.publish(event(Region.EMSOU))
            with pytest.raises(OutsideInstallation, match=r"refused an event on toex\.emsou\.tasking"):
                await uow.commit()
        async with unit() as uow:
            uow.publish(event(Region.LONDON))
            await uow.commit()
        async with engine.connect() as conn:
            subjects = (await conn.execute(select(outbox_table.c.subject))).scalars().all()
            total = (await conn.execute(select(func.count()).select_from(outbox_table))).scalar_one()
        assert total == 1 and subjects == ["toex.london.tasking.FeedbackRecorded"]
    finally:
        bind_publisher(engine, SINGLE)


async def test_at_the_hub_a_read_model_of_every_region_asks_for_every_regions_events(engine, nc) -> None:
    """The hub's consumers read the national team's own events; a read model of every region
    (national oversight) says so through the bus and reads them all; a region installation
    refuses to build one. (On the TASKING stream, which other tests' events share: each
    consumer is judged by this test's events.)"""
    await ensure_stream(nc.jetstream(), TASKING_STREAM)
    sessions = session_factory(engine)
    jobs = await publish(nc, "tasking", [Region.EMSOU, Region.NATIONAL, Region.LONDON])
    hub = Installation.of("hub", "NATIONAL")
    bus = MessageBus()
    seen: dict[str, list[str]] = {"own": [], "every": []}
    for key in seen:
        bus.on(f"{key}-{uuid.uuid4().hex[:8]}", events_pb2.FeedbackRecorded, recording(seen[key]))

    def built(scope: str | None) -> list[IdempotentConsumer]:
        return bus.consumers(
            platform(hub, engine, nc).consumer, lambda: SqlAlchemyUnitOfWork(sessions), scope=scope
        )

    def mine(key: str) -> list[str]:
        return [job for job in seen[key] if job in jobs]

    [own, _] = built(None)
    [_, every] = built(EVERY_REGION)
    for consumer, key, count in ((own, "own", 1), (every, "every", len(jobs))):
        stop = asyncio.Event()
        task = asyncio.create_task(consumer.run(stop))
        deadline = asyncio.get_running_loop().time() + 30
        while asyncio.get_running_loop().time() < deadline and len(mine(key)) < count:
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert mine("own") == [jobs[1]]
    assert all(job.startswith("regions/NATIONAL/") for job in seen["own"])
    assert mine("every") == jobs
    with pytest.raises(InstallationError, match="holds its own region's only"):
        bus.consumers(
            platform(LONDON, engine, nc).consumer, lambda: SqlAlchemyUnitOfWork(sessions), scope=EVERY_REGION
        )
