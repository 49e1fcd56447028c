"""Reading a JetStream stream back in integration tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime

import nats
import nats.errors
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy


async def stream_messages(
    nats_url: str,
    subject: str,
    until: Callable[[list[Msg]], bool] | None = None,
    wait: float = 60.0,
    since: datetime | None = None,
) -> list[Msg]:
    """The stream's messages on `subject`, oldest first: read until `until(messages)` holds (or
    `wait` seconds pass), or without `until` until the stream goes quiet for half a second.

    A session's tests share one nats-server, so a stream already holds other tests' events: a
    test waits for its own events, not for a count that others may make up. The stream is read
    from its start, and by the end of a run it can hold tens of thousands of other tests' events
    (each comms import's numbers become entity records): `wait` only bounds a failing test.
    With `since` (a time taken before the test wrote anything), it starts at the first message
    stored then, so a test late in a run does not read every earlier test's events first."""
    nc = await nats.connect(nats_url)
    try:
        config = (
            ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_TIME, opt_start_time=since)
            if since is not None
            else None
        )
        sub = await nc.jetstream().subscribe(subject, ordered_consumer=True, config=config)
        found: list[Msg] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while loop.time() < deadline:
            try:
                found.append(await sub.next_msg(timeout=0.5))
            except nats.errors.TimeoutError:
                if until is None or until(found):
                    break
        await sub.unsubscribe()
        return found
    finally:
        await nc.close()
