"""The `-tls` NATS configs the chart runs, for real: a hub and a region joined over TLS.

The leaf link crosses the WAN between a region and the hub. With tls.enabled the chart runs the
`-tls` twins of the generated configs: every client, route and leaf connection is TLS, and each
side presents a certificate of the national CA. Certificates are made here, at test time.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import nats.errors
import pytest
from nats.aio.client import Client
from toex_common.events.streams import StreamSpec, ensure_stream
from toex_deploycheck.natsfed import (
    Federation,
    client_context,
    federation,
    hub_streams_module,
    start_server,
    stop_server,
)
from toex_devstack.pki import Authority

pytestmark = pytest.mark.integration

OVERSIGHT = StreamSpec.for_domain("OVERSIGHT", "oversight")


@pytest.fixture(scope="module")
def fed() -> Iterator[Federation]:
    with federation(["emsou"], tls=True) as running:
        yield running


async def connect(url: str, tls: ssl.SSLContext | None, timeout: float = 5) -> Client:
    return await nats.connect(
        url, tls=tls, connect_timeout=timeout, max_reconnect_attempts=0, allow_reconnect=False
    )


@pytest.fixture(scope="module")
async def hub_ready(fed: Federation) -> AsyncIterator[None]:
    nc = await connect(fed.regions["emsou"].url("services", fed.passwords.services), fed.client_tls)
    await ensure_stream(nc.jetstream(), OVERSIGHT)
    await nc.drain()
    admin = await connect(fed.hub.url("admin", fed.passwords.admin), fed.client_tls)
    await hub_streams_module().ensure_hub_streams(admin.jetstream(), regions=("emsou",))
    await admin.drain()
    yield


async def test_an_event_crosses_the_leaf_link_over_tls(fed: Federation, hub_ready: None) -> None:
    marker = f"job-{uuid.uuid4()}"
    subject = f"toex.emsou.oversight.JobCreated.{marker}"
    region = await connect(fed.regions["emsou"].url("services", fed.passwords.services), fed.client_tls)
    try:
        ack = await region.jetstream().publish(subject, marker.encode(), headers={"Nats-Msg-Id": marker})
        assert ack.domain == "emsou"
    finally:
        await region.drain()

    hub = await connect(fed.hub.url("services", fed.passwords.services), fed.client_tls)
    try:
        js = hub.jetstream()
        for _ in range(80):
            info = await js.stream_info("OVERSIGHT", subjects_filter=subject)
            if info.state.subjects:
                break
            await asyncio.sleep(0.25)
        message = await js.get_last_msg("OVERSIGHT", subject)
        assert message.data == marker.encode(), fed.logs()
    finally:
        await hub.drain()
    hub_log = fed.hub.log.read_text()
    assert "Starting TLS leafnode server handshake" in hub_log and 'remote "emsou"' in hub_log


async def test_a_client_without_a_certificate_of_the_national_ca_is_refused(fed: Federation) -> None:
    url = fed.regions["emsou"].url("services", fed.passwords.services)
    assert fed.authority is not None
    directory = Path(fed.authority.directory)
    # Plaintext, even with the right password: no bearer of the password on the wire in clear.
    with pytest.raises((nats.errors.Error, OSError, TimeoutError, ssl.SSLError)):
        await asyncio.wait_for(connect(url.replace("tls://", "nats://"), None, 2), 3)
    # TLS that trusts the CA but presents no certificate.
    bare = ssl.create_default_context(cafile=str(fed.authority.ca_file))
    with pytest.raises((nats.errors.Error, OSError, TimeoutError, ssl.SSLError)):
        await asyncio.wait_for(connect(url, bare, 2), 3)
    # A certificate of another CA.
    other = Authority(directory, "someone-else")
    stranger = client_context(other, "stranger")
    stranger.load_verify_locations(str(fed.authority.ca_file))
    with pytest.raises((nats.errors.Error, OSError, TimeoutError, ssl.SSLError)):
        await asyncio.wait_for(connect(url, stranger, 2), 3)


def test_a_leaf_node_with_another_cas_certificate_cannot_join_the_hub(fed: Federation) -> None:
    """A server posing as ERSOU, with the right leaf password but a certificate of another CA."""
    assert fed.authority is not None and fed.hub.leaf_port
    root = Path(fed.authority.directory) / f"rogue-{uuid.uuid4().hex[:6]}"
    root.mkdir()
    rogue_ca = Authority(root, "rogue")
    # It even trusts the national CA, so only the hub's check of its certificate can stop it.
    rogue_ca.ca_file.write_bytes(rogue_ca.ca_file.read_bytes() + fed.authority.ca_file.read_bytes())
    hub_url = f"nats-leaf://leaf-ersou:{fed.passwords.leaf('ersou')}@127.0.0.1:{fed.hub.leaf_port}"
    seen = len(fed.hub.log.read_text())
    rogue = start_server("ersou", root, fed.passwords, {"TOEX_NATS_HUB_URL": hub_url}, rogue_ca)
    try:
        deadline = time.monotonic() + 15
        while "TLS leafnode handshake error" not in fed.hub.log.read_text()[seen:]:
            assert time.monotonic() < deadline, fed.logs()
            time.sleep(0.1)
        time.sleep(1.5)  # a retry or two more
        since = fed.hub.log.read_text()[seen:]
        assert 'remote "ersou"' not in since and "Leafnode connection closed: TLS Handshake Failure" in since
    finally:
        stop_server(rogue)
