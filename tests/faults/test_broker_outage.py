"""NATS down during writes, back later: writes are accepted meanwhile, their events wait in the
outbox, and once the broker is back every change is stored once and each of its events is on
the stream exactly once.

The relay's publishes go unacknowledged while the broker is away; it gives up waiting and
publishes again, and the client buffers every copy until it reconnects. The stream receives
each event several times, so what keeps it to one is the `Nats-Msg-Id` de-duplication.
"""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest

from .matrix import (
    SERVICES,
    ServiceSpec,
    covers,
    event_ids,
    eventually,
    ids_of,
    outbox,
    published,
    stored_ids,
)

WRITES = 3


@pytest.mark.parametrize("spec", SERVICES, ids=str)
async def test_writes_while_the_broker_is_down_are_published_once_when_it_returns(
    spec: ServiceSpec, launch: Any, postgres: Any, broker: Any, request: pytest.FixtureRequest
) -> None:
    extra = {"pnd_url": request.getfixturevalue("pnd_url")} if spec.needs_pnd else {}
    service = await launch(spec, postgres=postgres, nats_url=broker.url, **extra)

    broker.stop()
    try:
        names: list[str] = []
        for n in range(WRITES):
            names += await spec.write(service, n, str(uuid.uuid4()))
        if spec.bulk is not None:
            names += await spec.bulk(service, WRITES)

        async def held_and_tried() -> list[Any]:
            # Every change's events are in the outbox, and each has been published at least
            # once without an acknowledgement (so the relay will publish it again).
            held = await outbox(service.dsn)
            ready = covers((h.resource for h in held), names) and all(h.attempts >= 1 for h in held)
            return held if ready else []

        held = await eventually(held_and_tried, "the outbox to hold every change's events, tried")
    finally:
        broker.start()

    async def relayed() -> bool:
        return not await outbox(service.dsn)

    await eventually(relayed, "the outbox to empty once the broker is back")
    expected = Counter(h.event_id for h in held)
    messages = await published(
        broker.url, spec.domain, until=lambda found: set(event_ids(found)) >= set(expected)
    )
    assert event_ids(messages) == expected, "every held event on the stream exactly once, and nothing else"
    assert all(m.headers["Nats-Msg-Id"] == m.headers["ce-id"] for m in messages)
    assert await stored_ids(service) == ids_of(names), "every accepted change stored once"
