"""The nats_server fixture: a real JetStream server that can be restarted to simulate an outage."""

import asyncio
import socket
import uuid

import nats
import pytest
from nats.js.api import StreamConfig
from toex_devstack import NatsServer

pytestmark = pytest.mark.integration


async def test_jetstream_acknowledges_deduplicates_and_keeps_the_stream_across_a_restart(
    nats_server: NatsServer,
) -> None:
    stream = f"DEVSTACK_{uuid.uuid4().hex[:10].upper()}"
    subject = f"devstack.{stream.lower()}.created"
    first = await nats.connect(nats_server.url)
    try:
        js = first.jetstream()
        await js.add_stream(StreamConfig(name=stream, subjects=[f"devstack.{stream.lower()}.>"]))
        ack = await js.publish(subject, b"first", headers={"Nats-Msg-Id": "event-1"})
        assert (ack.stream, ack.seq, ack.duplicate) == (stream, 1, None)
        again = await js.publish(subject, b"first", headers={"Nats-Msg-Id": "event-1"})
        assert again.duplicate is True
    finally:
        await first.close()

    # A client that stays connected through the outage, as a service would.
    survivor = await nats.connect(
        nats_server.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1, allow_reconnect=True
    )
    try:
        port = nats_server.port
        await asyncio.to_thread(nats_server.restart)
        assert nats_server.port == port and nats_server.running

        js = survivor.jetstream()
        ack = None
        for _ in range(100):
            try:
                ack = await js.publish(subject, b"after-restart", timeout=0.5)
                break
            except (
                nats.errors.TimeoutError,
                nats.errors.NoRespondersError,
                nats.errors.ConnectionClosedError,
            ):
                await asyncio.sleep(0.1)
        assert ack is not None and ack.seq == 2

        info = await js.stream_info(stream)
        assert info.state.messages == 2
        stored = await js.get_msg(stream, seq=1)
        assert stored.data == b"first"
    finally:
        await survivor.close()


async def test_stopped_nats_server_refuses_connections_until_started_again(nats_server: NatsServer) -> None:
    await asyncio.to_thread(nats_server.stop)
    try:
        assert not nats_server.running
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", nats_server.port), timeout=1).close()
    finally:
        await asyncio.to_thread(nats_server.start)
    client = await nats.connect(nats_server.url)
    assert client.is_connected
    await client.close()
