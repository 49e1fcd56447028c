"""The direct reporter's faults against real servers: a reporter that dies mid-batch, after some
of its copies reached OVERSIGHT and before it acknowledged any original, and a broker stopped
while the reporter works. Either way OVERSIGHT ends with every report once and the aggregator
counts every event once."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import nats
import pytest
from toex_common.events.bus import MessageBus
from toex_common.events.streams import OVERSIGHT_STREAM
from toex_common.testing.streams import stream_messages
from toex_devstack.nats import NatsServer
from toex_oversight.entrypoints import reporter

from .conftest import Oversight, Regions
from .test_oversight_service import all_counted, check_the_two_regions, publish_the_two_regions

pytestmark = pytest.mark.integration


class Crash(Exception):
    """The process dying: nothing after it runs, nothing is acknowledged."""


class DyingStream:
    """JetStream that takes `survive` copies and then the process dies mid-publish."""

    def __init__(self, js: Any, survive: int) -> None:
        self._js = js
        self.left = survive
        self.taken: list[Any] = []

    async def publish_async(self, *args: Any, **kwargs: Any) -> Any:
        if self.left == 0:
            await asyncio.gather(*self.taken)  # the stream has those, then the process dies
            raise Crash()
        self.left -= 1
        future = await self._js.publish_async(*args, **kwargs)
        self.taken.append(future)
        return future

    def __getattr__(self, name: str) -> Any:
        return getattr(self._js, name)


def reporters(name: str, nc: Any, js: Any) -> list[reporter.DirectReporter]:
    """The service's four reporter consumers (its names), redelivering after 1 s."""
    bus = MessageBus()
    reporter.subscribe(bus, name, batch=64, fetch_wait_seconds=0.1)

    def make(consumer_class: type[reporter.DirectReporter], **config: Any) -> reporter.DirectReporter:
        return consumer_class(nc=nc, js=js, **{**config, "ack_wait_seconds": 1.0})

    def no_database() -> Any:
        raise AssertionError("the direct reporter opens no unit of work")

    return [c for c in bus.consumers(make, no_database) if isinstance(c, reporter.DirectReporter)]


async def reports_by_event(nats_url: str, expected: int) -> Counter[str]:
    found = await stream_messages(
        nats_url, "toex.*.oversight.>", until=lambda messages: len(messages) >= expected, wait=30
    )
    return Counter(str((m.headers or {}).get("Nats-Msg-Id")) for m in found)


async def test_a_reporter_that_dies_mid_batch_reports_every_event_once(
    oversight: Oversight, regions: Regions, own_nats: NatsServer
) -> None:
    await oversight.stop()  # its reporter is played by hand below
    published = await publish_the_two_regions(regions)
    ids = {e.event_id for e in regions.published}
    nc = await nats.connect(own_nats.url)
    try:
        js = nc.jetstream()
        dying = reporters(oversight.name, nc, DyingStream(js, survive=5))
        tasking = next(c for c in dying if c.name.endswith("-report-tasking"))
        await tasking.setup()
        subscription = await js.pull_subscribe_bind(durable=tasking.name, stream="TASKING")
        batch = await subscription.fetch(64, timeout=5)
        assert len(batch) > 5
        with pytest.raises(Crash):
            await tasking.handle_batch(batch)
        await subscription.unsubscribe()
        # Five copies are on OVERSIGHT, no original was acknowledged.
        assert (await js.stream_info(OVERSIGHT_STREAM.name)).state.messages == 5
        # Started again under the same names: the batch is redelivered and reported again.
        stop = asyncio.Event()
        again = reporters(oversight.name, nc, js)
        running = [asyncio.create_task(c.run(stop)) for c in again]
        try:
            reports = await reports_by_event(own_nats.url, published)
        finally:
            stop.set()
            await asyncio.gather(*running)
        assert set(reports) == ids and set(reports.values()) == {1}
        assert sum(c.counts[reporter.Outcome.DUPLICATE] for c in again) == 5
    finally:
        await nc.close()
    await oversight.start()
    answer = await oversight.until(all_counted(published))
    await asyncio.sleep(1)  # and nothing more
    answer = await oversight.overview()
    assert answer.total.events_counted == published
    check_the_two_regions(answer)


async def test_the_broker_stopped_while_reporting_loses_and_duplicates_nothing(
    oversight: Oversight, regions: Regions, own_nats: NatsServer
) -> None:
    published = await publish_the_two_regions(regions)
    ids = {e.event_id for e in regions.published}
    # The broker stopped as the reporter starts on the events, and started again on its store.
    await asyncio.to_thread(own_nats.restart)
    answer = await oversight.until(all_counted(published), wait=60)
    await asyncio.sleep(1)
    answer = await oversight.overview()
    assert answer.total.events_counted == published
    check_the_two_regions(answer)
    reports = await reports_by_event(own_nats.url, published)
    assert set(reports) == ids and set(reports.values()) == {1}
