"""The hub's source keeper against a real nats-server: a silent source is restarted, a healthy
one is left alone, and a restart neither loses nor repeats a message."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
from nats.aio.client import Client
from toex_common.events.sources import SourceKeeper, source_key

pytestmark = pytest.mark.integration


async def api(nc: Client, subject: str, payload: dict) -> dict:
    answer = json.loads(
        (await nc.request(f"$JS.API.{subject}", json.dumps(payload).encode(), timeout=5)).data
    )
    assert "error" not in answer, answer
    return answer


async def messages(nc: Client, stream: str) -> int:
    return int((await api(nc, f"STREAM.INFO.{stream}", {}))["state"]["messages"])


async def wait_for_count(nc: Client, stream: str, count: int) -> None:
    for _ in range(200):
        if await messages(nc, stream) >= count:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{stream} never reached {count} messages (has {await messages(nc, stream)})")


async def test_a_silent_source_is_restarted_and_a_restart_loses_and_repeats_nothing(nc: Client) -> None:
    token = uuid.uuid4().hex[:8]
    origin, copy = f"ORIG{token}".upper(), f"COPY{token}".upper()
    subjects = f"toex.emsou.k{token}.>"
    await api(nc, f"STREAM.CREATE.{origin}", {"name": origin, "subjects": [subjects], "storage": "memory"})
    healthy = {"name": origin, "filter_subject": subjects}
    # Read through a JetStream domain nobody serves: it is never heard from, like a region whose
    # link is down.
    silent = {"name": origin, "filter_subject": subjects, "external": {"api": "$JS.nowhere.API"}}
    await api(nc, f"STREAM.CREATE.{copy}", {"name": copy, "storage": "memory", "sources": [healthy, silent]})
    for i in range(10):
        await nc.publish(f"toex.emsou.k{token}.Made", f"{i}".encode())
    await wait_for_count(nc, copy, 10)

    keeper = SourceKeeper(nc, stalled_after=2.0, restart_gap=60.0, streams=[copy])
    await asyncio.sleep(3.0)  # longer than stalled_after: only heartbeats keep the healthy one fresh
    restarted = await keeper.check()
    assert [(r.stream, r.source) for r in restarted] == [(copy, source_key(silent))]
    assert await keeper.check() == []  # not again within the restart gap
    config = (await api(nc, f"STREAM.INFO.{copy}", {}))["config"]
    assert sorted(source_key(s) for s in config["sources"]) == sorted(
        [source_key(healthy), source_key(silent)]
    )

    # The healthy source restarted too: it resumes after what the stream holds from it.
    assert await keeper.restart(copy, source_key(healthy))
    for i in range(10, 15):
        await nc.publish(f"toex.emsou.k{token}.Made", f"{i}".encode())
    await wait_for_count(nc, copy, 15)
    await asyncio.sleep(0.5)
    js = nc.jetstream()
    bodies = []
    for seq in range(1, await messages(nc, copy) + 1):
        bodies.append((await js.get_msg(copy, seq)).data.decode())
    assert bodies == [str(i) for i in range(15)]
    for name in (copy, origin):
        await api(nc, f"STREAM.DELETE.{name}", {})
