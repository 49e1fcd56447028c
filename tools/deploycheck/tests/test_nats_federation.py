"""The generated NATS configs, run for real: a hub and two regions (EMSOU, ERSOU) as leaf nodes.

Proves what the issue asks: an event a region reports (stream OVERSIGHT, which the hub sources
from every region, deploy/nats/hub_streams.py) reaches the hub's stream, and the other region
cannot subscribe to it, not even with an unrestricted user on its own server, nor slip forged
events of another region into the hub. And the other way: a region's own events (TASKING, COMMS:
job descriptions, numbers) never reach the hub's streams, whose streams of those names hold the
national team's own events only.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import ConsumerConfig, DeliverPolicy
from toex_common.events.streams import StreamSpec, ensure_stream
from toex_deploycheck.natsfed import Federation, federation, hub_streams_module

pytestmark = pytest.mark.integration

TASKING = StreamSpec.for_domain("TASKING", "tasking")
COMMS = StreamSpec.for_domain("COMMS", "comms")
OVERSIGHT = StreamSpec.for_domain("OVERSIGHT", "oversight")
# By the domain token of a subject `toex.<region>.<domain>...`.
STREAM_OF = {"tasking": "TASKING", "comms": "COMMS", "oversight": "OVERSIGHT"}


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with federation(["emsou", "ersou"]) as running:
        yield running


class Errors:
    """Collects the asynchronous errors the server sends a client (permission violations)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

        async def record(exc: Exception) -> None:
            self.seen.append(str(exc))

        # nats-py wants a coroutine function, not an object with an async __call__.
        self.callback = record

    async def wait_for(self, text: str, timeout: float = 5.0) -> str:
        for _ in range(int(timeout / 0.05)):
            for message in self.seen:
                # nats-py lower-cases the server's -ERR text.
                if text.lower() in message.lower():
                    return message
            await asyncio.sleep(0.05)
        raise AssertionError(f"no error containing {text!r}; saw {self.seen}")


async def _connect(url: str, errors: Errors | None = None) -> Client:
    return await nats.connect(
        url, error_cb=(errors or Errors()).callback, connect_timeout=5, max_reconnect_attempts=0
    )


@pytest.fixture(scope="module")
async def hub_ready(fed: Federation) -> AsyncIterator[None]:
    """Each region's services create their stream at start; the hub job then sources them."""
    for region, server in fed.regions.items():
        nc = await _connect(server.url("services", fed.passwords.services))
        for spec in (TASKING, COMMS, OVERSIGHT):
            await ensure_stream(nc.jetstream(), spec)
        await nc.drain()
        assert region
    admin = await _connect(fed.hub.url("admin", fed.passwords.admin))
    await hub_streams_module().ensure_hub_streams(admin.jetstream(), regions=tuple(fed.regions))
    await admin.drain()
    yield


async def _publish(fed: Federation, region: str, subject: str, marker: bytes, user: str = "services") -> None:
    password = fed.passwords.services if user == "services" else fed.passwords.admin
    nc = await _connect(fed.regions[region].url(user, password))
    try:
        ack = await nc.jetstream().publish(subject, marker, headers={"Nats-Msg-Id": marker.decode()})
        assert ack.stream == STREAM_OF[subject.split(".")[2]] and ack.domain == region
    finally:
        await nc.drain()


async def _hub_messages(
    fed: Federation, subject: str, want: int = 1, timeout: float = 20.0, stream: str = "OVERSIGHT"
) -> list[Msg]:
    """Read a hub stream as a national consumer (the hub's `services` user)."""
    nc = await _connect(fed.hub.url("services", fed.passwords.services))
    js = nc.jetstream()
    found: list[Msg] = []
    try:
        for _ in range(int(timeout / 0.25)):
            info = await js.stream_info(stream, subjects_filter=subject)
            if info.state.subjects and sum(info.state.subjects.values()) >= want:
                break
            await asyncio.sleep(0.25)
        sub = await js.pull_subscribe(
            subject, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        try:
            found = await sub.fetch(want, timeout=2)
        except nats.errors.TimeoutError:
            found = []
        await sub.unsubscribe()
    finally:
        await nc.drain()
    return found


async def test_an_event_a_region_reports_reaches_the_hub_stream(fed: Federation, hub_ready: None) -> None:
    marker = f"job-{uuid.uuid4()}"
    subject = f"toex.emsou.oversight.JobCreated.{marker}"
    await _publish(fed, "emsou", subject, marker.encode())

    messages = await _hub_messages(fed, subject)

    assert [m.data for m in messages] == [marker.encode()], fed.logs()
    assert messages[0].headers and messages[0].headers.get("Nats-Msg-Id") == marker


async def test_the_hub_keeps_each_region_apart_and_sees_both(fed: Federation, hub_ready: None) -> None:
    marker = uuid.uuid4().hex
    await _publish(fed, "ersou", f"toex.ersou.oversight.JobCreated.{marker}", b"from ersou")

    messages = await _hub_messages(fed, f"toex.*.oversight.JobCreated.{marker}")

    assert [m.subject for m in messages] == [f"toex.ersou.oversight.JobCreated.{marker}"]


async def test_a_regions_own_events_never_reach_the_hub(fed: Federation, hub_ready: None) -> None:
    """TASKING and COMMS (job descriptions, numbers) stay in the region: the hub's streams of
    those names have no sources, and only the region's OVERSIGHT report of the same job travels."""
    marker = uuid.uuid4().hex
    own = [f"toex.emsou.tasking.JobCreated.{marker}", f"toex.emsou.comms.DatasetImported.{marker}"]
    for subject in own:
        await _publish(fed, "emsou", subject, f"personal {marker}".encode())
    reported = f"toex.emsou.oversight.JobCreated.{marker}"
    await _publish(fed, "emsou", reported, b"value-free")

    assert len(await _hub_messages(fed, reported)) == 1, fed.logs()  # the link is up and sourcing
    await asyncio.sleep(1.0)  # what a source would have brought by now
    nc = await _connect(fed.hub.url("admin", fed.passwords.admin))
    try:
        js = nc.jetstream()
        for subject in own:
            stream = STREAM_OF[subject.split(".")[2]]
            info = await js.stream_info(stream, subjects_filter="toex.emsou.>")
            assert not info.config.sources and not info.state.subjects, (stream, info.state.subjects)
        # What the hub sources at all: the reports, the fingerprints, the audit chain heads.
        sourced = {i.config.name for i in await js.streams_info() if i.config.sources}
        assert sourced == {"OVERSIGHT", "ENTITY", "AUDIT"}
        for name in sourced:
            info = await js.stream_info(name)
            assert {s.name for s in info.config.sources or []} == {name}
    finally:
        await nc.drain()


async def test_another_regions_services_cannot_subscribe_to_it(fed: Federation, hub_ready: None) -> None:
    errors = Errors()
    nc = await _connect(fed.regions["ersou"].url("services", fed.passwords.services), errors)
    try:
        await nc.subscribe("toex.emsou.>")
        await nc.flush()
        message = await errors.wait_for("Permissions Violation for Subscription")
        assert "toex.emsou.>" in message.lower()
    finally:
        await nc.close()


async def test_a_region_cannot_publish_outside_its_own_subjects(fed: Federation, hub_ready: None) -> None:
    errors = Errors()
    nc = await _connect(fed.regions["emsou"].url("services", fed.passwords.services), errors)
    try:
        await nc.publish("toex.ersou.tasking.JobCreated", b"forged")
        await nc.flush()
        message = await errors.wait_for("Permissions Violation for Publish")
        assert "toex.ersou.tasking.jobcreated" in message.lower()
    finally:
        await nc.close()


async def test_even_an_unrestricted_user_of_another_region_receives_nothing(
    fed: Federation, hub_ready: None
) -> None:
    """The hub, not the region, enforces it: ERSOU's admin listens to everything its server sees."""
    received: list[Msg] = []
    spy = await _connect(fed.regions["ersou"].url("admin", fed.passwords.admin))
    try:

        async def keep(msg: Msg) -> None:
            received.append(msg)

        await spy.subscribe(">", cb=keep)
        await spy.flush()
        marker = f"secret-{uuid.uuid4()}".encode()
        subject = f"toex.emsou.oversight.JobCreated.{marker.decode()}"
        await _publish(fed, "emsou", subject, marker)

        assert len(await _hub_messages(fed, subject)) == 1  # it did travel, to the hub
        await asyncio.sleep(0.5)
        leaked = [m.subject for m in received if marker in m.data or "emsou" in m.subject]
        assert leaked == []
    finally:
        await spy.close()


async def test_a_region_cannot_slip_another_regions_events_into_the_hub(
    fed: Federation, hub_ready: None
) -> None:
    """Even a forged `toex.emsou...` event in ERSOU's own stream never reaches the hub."""
    marker = uuid.uuid4().hex
    forged = f"toex.emsou.oversight.JobCreated.{marker}"
    genuine = f"toex.ersou.oversight.JobCreated.{marker}"
    await _publish(fed, "ersou", forged, b"forged", user="admin")
    await _publish(fed, "ersou", genuine, b"genuine", user="admin")

    # The genuine one arrives after the forged one in ERSOU's stream, so once it is at the hub
    # the forged one had its chance.
    assert [m.data for m in await _hub_messages(fed, genuine)] == [b"genuine"]
    assert await _hub_messages(fed, forged, timeout=0.5) == []
