"""Hub to region, run for real: the generated configs, a hub and two regions (EMSOU, LONDON).

The hub addresses a region on `toex.<region>.hub.<Event>` (stream HUB). Each region's own HUB
stream sources the hub's durable consumer `to-<region>` (deploy/nats/hub_streams.py and
region_streams.py), and `leaf-<region>` may restart that consumer and nothing else of the hub's
JetStream (generate.py). Shown here: a message addressed to EMSOU reaches EMSOU's stream and not
LONDON's; LONDON's unrestricted admin receives nothing of it; LONDON cannot source, consume,
restart or read EMSOU's share, while the same requests for its own share are answered; and
messages addressed while EMSOU's leaf link is cut arrive once the link is back, each exactly once.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import nats
import nats.errors
import nats.js.errors
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js.api import (
    ConsumerConfig,
    DeliverPolicy,
    ExternalStream,
    StreamConfig,
    StreamConsumerSource,
    StreamSource,
)
from toex_deploycheck.natsfed import Federation, federation, hub_streams_module, region_streams_module

pytestmark = pytest.mark.integration

REGIONS = ("emsou", "london")


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with federation(list(REGIONS), cuttable=["emsou"]) as running:
        yield running


async def _connect(url: str) -> Client:
    return await nats.connect(url, connect_timeout=5, max_reconnect_attempts=0, allow_reconnect=False)


@pytest.fixture(scope="module")
async def addressed_ready(fed: Federation) -> AsyncIterator[None]:
    """What the stream jobs do: the hub's HUB stream and consumers, then each region's HUB."""
    admin = await _connect(fed.hub.url("admin", fed.passwords.admin))
    await hub_streams_module().ensure_hub_streams(admin.jetstream(), regions=REGIONS)
    await admin.drain()
    for region in REGIONS:
        nc = await _connect(fed.regions[region].url("admin", fed.passwords.admin))
        await region_streams_module().ensure_region_streams(nc.jetstream(), region)
        await nc.drain()
    yield


async def _address(fed: Federation, region: str, marker: str, event: str = "NationalNotice") -> str:
    """The hub's services publish a message addressed to `region`."""
    subject = f"toex.{region}.hub.{event}.{marker}"
    nc = await _connect(fed.hub.url("services", fed.passwords.services))
    try:
        ack = await nc.jetstream().publish(subject, marker.encode(), headers={"Nats-Msg-Id": marker})
        assert ack.stream == "HUB" and ack.domain == "hub"
    finally:
        await nc.drain()
    return subject


async def _region_messages(
    fed: Federation, region: str, subject: str, want: int = 1, timeout: float = 20.0, stream: str = "HUB"
) -> list[Msg]:
    """The region's `stream` read by its own services (its `services` user), from the start."""
    nc = await _connect(fed.regions[region].url("services", fed.passwords.services))
    js = nc.jetstream()
    try:
        for _ in range(int(timeout / 0.25)):
            info = await js.stream_info(stream, subjects_filter=subject)
            if info.state.subjects and sum(info.state.subjects.values()) >= want:
                break
            await asyncio.sleep(0.25)
        sub = await js.pull_subscribe(
            subject, stream=stream, config=ConsumerConfig(deliver_policy=DeliverPolicy.ALL)
        )
        found: list[Msg] = []
        try:
            while True:
                found += await sub.fetch(100, timeout=1)
        except (nats.errors.TimeoutError, TimeoutError):
            pass
        await sub.unsubscribe()
        return found
    finally:
        await nc.drain()


async def _stream_subjects(fed: Federation, region: str, stream: str = "HUB") -> dict[str, int]:
    nc = await _connect(fed.regions[region].url("admin", fed.passwords.admin))
    try:
        info = await nc.jetstream().stream_info(stream, subjects_filter=">")
        return dict(info.state.subjects or {})
    finally:
        await nc.close()


async def test_a_message_addressed_to_emsou_reaches_emsous_stream(
    fed: Federation, addressed_ready: None
) -> None:
    marker = f"notice-{uuid.uuid4()}"
    subject = await _address(fed, "emsou", marker)

    messages = await _region_messages(fed, "emsou", subject)

    assert [m.data for m in messages] == [marker.encode()], fed.logs()
    assert messages[0].headers and messages[0].headers.get("Nats-Msg-Id") == marker


async def test_each_region_gets_its_own_and_not_the_others(fed: Federation, addressed_ready: None) -> None:
    marker = uuid.uuid4().hex
    for_emsou = await _address(fed, "emsou", f"e-{marker}")
    for_london = await _address(fed, "london", f"l-{marker}")

    assert [m.subject for m in await _region_messages(fed, "london", for_london)] == [for_london]
    assert [m.subject for m in await _region_messages(fed, "emsou", for_emsou)] == [for_emsou]
    # Both arrived at their own region; neither region's stream holds a subject of the other.
    assert not [s for s in await _stream_subjects(fed, "london") if not s.startswith("toex.london.hub.")]
    assert not [s for s in await _stream_subjects(fed, "emsou") if not s.startswith("toex.emsou.hub.")]


async def test_even_londons_unrestricted_admin_receives_nothing_addressed_to_emsou(
    fed: Federation, addressed_ready: None
) -> None:
    received: list[Msg] = []
    spy = await _connect(fed.regions["london"].url("admin", fed.passwords.admin))
    try:

        async def keep(msg: Msg) -> None:
            received.append(msg)

        # Everything its server sees, and by name the subject EMSOU's share is delivered on.
        await spy.subscribe(">", cb=keep)
        await spy.subscribe("$TOEX.ADDR.emsou", cb=keep)
        await spy.flush()
        marker = f"secret-{uuid.uuid4()}"
        subject = await _address(fed, "emsou", marker)

        assert len(await _region_messages(fed, "emsou", subject)) == 1  # it did travel, to EMSOU
        await asyncio.sleep(1.0)
        leaked = [m.subject for m in received if marker.encode() in m.data or "emsou" in m.subject]
        assert leaked == []
        assert [s for s in await _stream_subjects(fed, "london") if marker in s] == []
    finally:
        await spy.close()


async def _api(nc: Client, subject: str, body: dict[str, object]) -> dict[str, object] | str:
    """A JetStream API request as a region's stream would send it (its reply on `$JSC.R.`, the
    only replies the hub may send down a leaf link): the answer, or why there was none."""
    reply = f"$JSC.R.{uuid.uuid4().hex}"
    sub = await nc.subscribe(reply, max_msgs=1)
    try:
        await nc.publish(subject, json.dumps(body).encode(), reply=reply)
        msg = await sub.next_msg(timeout=3)
    except (nats.errors.TimeoutError, TimeoutError):
        return "no answer"
    finally:
        await sub.unsubscribe()
    if msg.headers and msg.headers.get("Status") == "503":
        return "no responders"
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def test_london_cannot_reach_emsous_share_at_the_hub(fed: Federation, addressed_ready: None) -> None:
    """The same requests are answered for LONDON's own share: what stops the others is
    leaf-london's permissions (the hub does not even offer LONDON those subjects)."""
    lon = await _connect(fed.regions["london"].url("admin", fed.passwords.admin))
    try:
        own = await _api(lon, "$JS.hub.API.CONSUMER.RESET.HUB.to-london", {})
        assert isinstance(own, dict) and own.get("type") == "io.nats.jetstream.api.v1.consumer_reset_response"
        assert own["config"]["filter_subject"] == "toex.london.hub.>"  # type: ignore[index]

        refused = {
            "restart EMSOU's consumer": ("$JS.hub.API.CONSUMER.RESET.HUB.to-emsou", {}),
            "create a consumer on EMSOU's subjects": (
                "$JS.hub.API.CONSUMER.CREATE.HUB.spy.toex.emsou.hub.>",
                {
                    "stream_name": "HUB",
                    "config": {"name": "spy", "filter_subject": "toex.emsou.hub.>", "deliver_subject": "spy"},
                },
            ),
            "create a consumer by the older request": (
                "$JS.hub.API.CONSUMER.CREATE.HUB",
                {"stream_name": "HUB", "config": {"filter_subject": "toex.emsou.hub.>"}},
            ),
            "read a message by sequence": ("$JS.hub.API.STREAM.MSG.GET.HUB", {"seq": 1}),
            "read the stream directly": ("$JS.hub.API.DIRECT.GET.HUB", {"seq": 1}),
            "read the stream's information": ("$JS.hub.API.STREAM.INFO.HUB", {}),
        }
        answers = {what: await _api(lon, subject, body) for what, (subject, body) in refused.items()}
        assert answers == dict.fromkeys(refused, "no responders")
    finally:
        await lon.close()


async def test_a_london_stream_sourcing_emsous_share_stays_empty(
    fed: Federation, addressed_ready: None
) -> None:
    """LONDON's admin configures streams that would source EMSOU's share: by a filter of its own
    choosing and by EMSOU's durable consumer. Neither gets anything; the source reports no
    activity, while LONDON's own HUB stream keeps receiving."""
    name = f"SPY{uuid.uuid4().hex[:8].upper()}"
    lon = await _connect(fed.regions["london"].url("admin", fed.passwords.admin))
    js = lon.jetstream()
    try:
        await js.add_stream(
            StreamConfig(
                name=name,
                sources=[
                    StreamSource(
                        name="HUB",
                        filter_subject="toex.emsou.hub.>",
                        external=ExternalStream(api="$JS.hub.API", deliver="$TOEX.SYNC.london"),
                    )
                ],
            )
        )
        await js.add_stream(
            StreamConfig(
                name=f"{name}D",
                sources=[
                    StreamSource(
                        name="HUB",
                        external=ExternalStream(api="$JS.hub.API"),
                        consumer=StreamConsumerSource(name="to-emsou", deliver_subject="$TOEX.ADDR.emsou"),
                    )
                ],
            )
        )
        marker = uuid.uuid4().hex
        for_emsou = await _address(fed, "emsou", f"e-{marker}")
        for_london = await _address(fed, "london", f"l-{marker}")
        assert len(await _region_messages(fed, "emsou", for_emsou)) == 1
        assert len(await _region_messages(fed, "london", for_london)) == 1
        await asyncio.sleep(2.0)
        for spy in (name, f"{name}D"):
            info = await js.stream_info(spy)
            assert info.state.messages == 0, (spy, info.sources)
    finally:
        for spy in (name, f"{name}D"):
            try:
                await js.delete_stream(spy)
            except Exception:
                pass
        await lon.close()


async def test_a_region_cannot_forge_what_the_hub_addresses_to_it(
    fed: Federation, addressed_ready: None
) -> None:
    """EMSOU's services may not publish on `toex.emsou.hub.>`; its HUB stream has no subjects of
    its own, so even EMSOU's admin's publish there lands in no stream."""
    errors: list[str] = []

    async def record(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await nats.connect(
        fed.regions["emsou"].url("services", fed.passwords.services),
        error_cb=record,
        max_reconnect_attempts=0,
    )
    try:
        await nc.publish("toex.emsou.hub.NationalNotice.forged", b"forged")
        await nc.flush()
        for _ in range(100):
            if any("permissions violation for publish" in e for e in errors):
                break
            await asyncio.sleep(0.05)
        assert any("toex.emsou.hub.nationalnotice.forged" in e for e in errors), errors
    finally:
        await nc.close()
    admin = await _connect(fed.regions["emsou"].url("admin", fed.passwords.admin))
    try:
        with pytest.raises(nats.js.errors.NoStreamResponseError):
            await admin.jetstream().publish("toex.emsou.hub.NationalNotice.forged", b"forged")
    finally:
        await admin.close()


async def _wait_for_joins(fed: Federation, count: int, timeout: float = 30.0) -> None:
    for _ in range(int(timeout / 0.1)):
        if fed.leaf_joins() >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"the leaf link did not come back:\n{fed.logs()}")


async def test_addressed_while_the_link_is_cut_arrives_exactly_once_after(
    fed: Federation, addressed_ready: None
) -> None:
    event = f"Cut{uuid.uuid4().hex}"
    before = [await _address(fed, "emsou", f"before-{i}", event) for i in range(3)]
    everything = f"toex.emsou.hub.{event}.>"
    assert len(await _region_messages(fed, "emsou", everything, 3)) == 3

    joins = fed.leaf_joins()
    fed.links["emsou"].cut()
    during = [await _address(fed, "emsou", f"during-{i}", event) for i in range(20)]
    await asyncio.sleep(2.0)
    # Cut off: the hub holds them; EMSOU has none of them yet, and LONDON is served meanwhile.
    assert not [s for s in await _stream_subjects(fed, "emsou") if ".during-" in s and event in s]
    for_london = await _address(fed, "london", "meanwhile", event)
    assert len(await _region_messages(fed, "london", for_london)) == 1

    fed.links["emsou"].restore()
    await _wait_for_joins(fed, joins + 1)
    after = [await _address(fed, "emsou", f"after-{i}", event) for i in range(3)]

    messages = await _region_messages(fed, "emsou", everything, want=len(before) + len(during) + len(after))
    subjects = [m.subject for m in messages]
    assert sorted(subjects) == sorted([*before, *during, *after]), fed.logs()
    assert len(subjects) == len(set(subjects))  # exactly once each
    # In the order the hub addressed them.
    assert [s for s in subjects if ".during-" in s] == during


def test_the_generator_and_both_stream_jobs_name_the_same_consumers_and_subjects() -> None:
    """generate.py (the leaf permissions) and the two jobs each carry the names; they must agree."""
    import importlib.util

    from toex_deploycheck.paths import NATS_DIR

    spec = importlib.util.spec_from_file_location("generate", NATS_DIR / "generate.py")
    assert spec and spec.loader
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    hub, region = hub_streams_module(), region_streams_module()
    for token in generate.REGIONS:
        assert (
            generate.addressed_consumer(token)
            == hub.addressed_consumer(token)
            == region.addressed_consumer(token)
        )
        assert (
            generate.addressed_deliver(token)
            == hub.addressed_deliver(token)
            == region.addressed_deliver(token)
        )
        assert (
            hub.addressed_consumer_config(token).filter_subject
            == f"toex.{token}.{generate.ADDRESSED_DOMAIN}.>"
        )
    assert generate.ADDRESSED_STREAM == region.region_hub_stream_config("emsou").name == "HUB"
    assert set(generate.REGIONS) == set(hub.REGIONS) == set(region.REGIONS)
