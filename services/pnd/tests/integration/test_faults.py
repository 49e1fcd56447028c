"""The faults the issue names: the PND down and back, the service killed mid-batch, a burst."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from typing import Any

import grpc
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from toex.pnd.events.v1 import events_pb2
from toex.pnd.v1 import pnd_pb2 as pb
from toex.pnd.v1 import pnd_pb2_grpc
from toex_common.migrations import upgrade
from toex_pnd.__main__ import migrations_dir

from .conftest import free_port, service_env
from .helpers import check_exactly_once_in_order, eventually, open_submissions, phone, submit, update

pytestmark = pytest.mark.integration

RES, NC = "researcher.emsou", "national_coordinator.national"


def number(i: int) -> str:
    return f"+4477009{i % 100000:05d}"


def spawn_service(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "toex_pnd", "serve"], env=env)


async def drained(database: str, timeout: float = 60.0) -> None:
    async def empty() -> bool:
        return await open_submissions(database) == 0

    assert await eventually(empty, timeout=timeout), "the queue did not drain"


async def reconcile(stub: Any, md: Any) -> pb.Reconciliation:
    return (await stub.RunReconciliation(pb.RunReconciliationRequest(), metadata=md)).reconciliation


def assert_complete(report: pb.Reconciliation, records: int) -> None:
    assert sum(r.local_records for r in report.regions) == records
    assert sum(r.in_sync for r in report.regions) == records
    for region in report.regions:
        assert (region.missing.count, region.stale.count, region.rejected.count, region.held.count) == (
            0,
            0,
            0,
            0,
        )


async def test_pnd_down_then_back_every_change_arrives_once_in_order(pnd) -> None:
    stub, md = pnd.stub, pnd.md(RES)
    versions: dict[str, int] = {}
    first = [(await stub.SubmitIntelligence(submit(phone(number(i))), metadata=md)).record for i in range(10)]
    versions.update({r.name: 1 for r in first})
    await drained(pnd.database)

    pnd.simulator.stop()  # the PND goes away
    later = [
        (await stub.SubmitIntelligence(submit(phone(number(100 + i))), metadata=md)).record for i in range(10)
    ]
    versions.update({r.name: 1 for r in later})
    for round_ in range(2):
        for i, record in enumerate(first + later):
            await stub.UpdateIntelligence(
                update(record.name, phone(number(1000 * (round_ + 2) + i))), metadata=md
            )
            versions[record.name] += 1
    await asyncio.sleep(2.0)  # several retries fail meanwhile

    status = await stub.GetSyncStatus(pb.GetSyncStatusRequest(name="regions/EMSOU/syncStatus"), metadata=md)
    assert status.queued == 50 and status.retrying > 0 and status.last_error
    history = (
        await stub.ListSubmissions(pb.ListSubmissionsRequest(parent=later[0].name), metadata=md)
    ).submissions
    assert history[0].attempts >= 2, "retries should have been made while the PND was down"

    pnd.simulator.start()  # back, with everything it held before
    await drained(pnd.database)
    check_exactly_once_in_order(pnd.simulator.applied(), versions)
    assert_complete(await reconcile(stub, pnd.md(NC)), 20)


async def test_service_killed_mid_batch_loses_and_duplicates_nothing(
    database, nats_server, keycloak, tokens, simulator
) -> None:
    await asyncio.to_thread(upgrade, database, migrations_dir())
    port = free_port()
    env = service_env(database, nats_server.url, keycloak.issuer, simulator.url, port)

    async def start() -> subprocess.Popen[bytes]:
        proc = spawn_service(env)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        health = health_pb2_grpc.HealthStub(channel)

        async def serving() -> bool:
            try:
                answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                return answer.status == health_pb2.HealthCheckResponse.SERVING
            except grpc.aio.AioRpcError:
                return False

        ok = await eventually(serving, timeout=30)
        await channel.close()
        assert ok, "the service did not start"
        return proc

    md = [("authorization", f"Bearer {tokens[RES]}"), ("x-toex-purpose", "Op KITE")]
    proc = await start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pnd_pb2_grpc.PndSyncServiceStub(channel)
    try:
        # Slow acknowledgements: the PND applies each batch at once but answers late.
        simulator.control(latency_ms=3000)
        versions: dict[str, int] = {}
        records = await asyncio.gather(
            *(stub.SubmitIntelligence(submit(phone(number(5000 + i))), metadata=md) for i in range(300))
        )
        for response in records:
            versions[response.record.name] = 1
        for i, response in enumerate(records[:100]):
            await stub.UpdateIntelligence(update(response.record.name, phone(number(6000 + i))), metadata=md)
            versions[response.record.name] = 2

        async def applied_some() -> bool:
            return simulator.stats()["accepted"] > 0

        assert await eventually(applied_some, timeout=20)
        proc.send_signal(signal.SIGKILL)  # mid-batch: applied by the PND, not yet acknowledged here
        proc.wait(10)
        assert await open_submissions(database) > 0
        unacknowledged = simulator.stats()["accepted"]

        simulator.control(latency_ms=0)
        proc = await start()
        await drained(database)
        stats = simulator.stats()
        assert stats["duplicates"] >= 1, "the batch in flight should have been sent again"
        assert unacknowledged >= 1
        check_exactly_once_in_order(simulator.applied(), versions)
        report = await reconcile(stub, [("authorization", f"Bearer {tokens[NC]}")])
        assert_complete(report, 300)

        # One SubmissionAccepted per submission: the answers were stored (and published) once.
        nc = await nats.connect(nats_server.url)
        try:
            sub = await nc.jetstream().subscribe("toex.emsou.pnd.SubmissionAccepted", ordered_consumer=True)
            seen: list[str] = []
            while True:
                try:
                    message = await sub.next_msg(timeout=1.0)
                except nats.errors.TimeoutError:
                    break
                event = events_pb2.SubmissionAccepted.FromString(message.data)
                if event.record in versions:
                    seen.append(event.submission_id)
        finally:
            await nc.close()
        assert len(seen) == 400 and len(set(seen)) == 400
    finally:
        await channel.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(20)


async def test_burst_of_ten_thousand_changes_drains_with_nothing_missing(pnd) -> None:
    stub, md = pnd.stub, pnd.md(RES)
    limit = asyncio.Semaphore(48)

    async def one(i: int) -> str:
        async with limit:
            response = await stub.SubmitIntelligence(submit(phone(number(20000 + i))), metadata=md)
            return response.record.name

    names = await asyncio.gather(*(one(i) for i in range(8000)))

    async def change(i: int, name: str) -> None:
        async with limit:
            await stub.UpdateIntelligence(update(name, phone(number(40000 + i))), metadata=md)

    await asyncio.gather(*(change(i, name) for i, name in enumerate(names[:2000])))
    await drained(pnd.database, timeout=120)
    applied = pnd.simulator.applied()
    assert len(applied) == 10_000
    versions = {name: 2 if i < 2000 else 1 for i, name in enumerate(names)}
    check_exactly_once_in_order(applied, versions)
    assert_complete(await reconcile(stub, pnd.md(NC)), 8000)
