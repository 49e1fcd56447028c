"""Backpressure and health: a service whose database or broker is away says so, in every service.

While either is down its gRPC health answers NOT_SERVING (Kubernetes stops routing to it), a
call that needs the database is refused UNAVAILABLE at once rather than after the caller's
deadline, and once both are back the service reports SERVING again by itself.

The refused call read and changed nothing, so it owes no audit entry (and with the database
away none could be written): it leaves a log line naming who called what, with which purpose
and request id, instead. The caller's retry with the same request id once the database is
back is the first call to change anything, and it is audited as any other.

One PostgreSQL and one nats-server serve the module's tests (each service in a database of its
own); each test stops and starts them, and leaves them running.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from toex_common.grpc.server import LIVENESS

from .matrix import ENTITY, PND, SERVICES, TASKING, ServiceSpec, ids_of, query, stored_ids

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
PURPOSE = "Op FAULTLINE"  # what Caller.md sends


@pytest.fixture
def broker(module_broker: Any) -> Iterator[Any]:
    yield module_broker


async def status(service: Any, name: str = "") -> int:
    answer = await health_pb2_grpc.HealthStub(service.channel).Check(
        health_pb2.HealthCheckRequest(service=name), timeout=3
    )
    return int(answer.status)


async def becomes(service: Any, wanted: int, within: float = 10.0) -> float:
    """Seconds until the health check answers `wanted`."""
    started = time.monotonic()
    while await status(service) != wanted:
        assert time.monotonic() - started < within, f"health still not {wanted} after {within} s"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def serving(launch: Any, spec: ServiceSpec, broker: Any, postgres: Any, **settings: Any) -> Any:
    """The service launched, checking its database and broker every 0.2 s, and SERVING."""
    service = await launch(
        spec, postgres=postgres, nats_url=broker.url, dependency_check_seconds=0.2, **settings
    )
    # As `serve` does once it listens.
    for name in ["", LIVENESS, *service.app.service_names]:
        await service.app.health.set(name, SERVING)
    return service


async def refused_at_once(spec: ServiceSpec, service: Any, n: int, request_id: str) -> grpc.aio.AioRpcError:
    """The n-th write, refused UNAVAILABLE within seconds (its deadline is CALL_TIMEOUT, 15 s)."""
    started = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await spec.write(service, n, request_id)
    took = time.monotonic() - started
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
    assert took < 5, f"refused only after {took:.1f} s"
    return refused.value


def unwritten_entries(caplog: pytest.LogCaptureFixture) -> list[Any]:
    """The log lines of calls whose audit entry could not be written."""
    return [r for r in caplog.records if r.getMessage().startswith("audit entry not written")]


@pytest.mark.parametrize("spec", [*SERVICES, TASKING], ids=str)
async def test_health_follows_the_database_and_the_broker(
    spec: ServiceSpec, broker: Any, launch: Any, restartable_postgres: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="toex_common.grpc.interceptors")
    extra = {"pnd_url": "http://127.0.0.1:9"} if spec is PND else {}  # nothing here needs PND
    service = await serving(launch, spec, broker, restartable_postgres, **extra)

    broker.stop()
    try:
        print(f"{spec}: broker away, NOT_SERVING after {await becomes(service, NOT_SERVING):.1f} s")
        # Unready, not dead: the liveness probe's name stays SERVING (a restart would not help).
        assert await status(service, LIVENESS) == SERVING
    finally:
        broker.start()
    print(f"{spec}: broker back, SERVING after {await becomes(service, SERVING):.1f} s")

    request_id = str(uuid.uuid4())
    await asyncio.to_thread(restartable_postgres.stop)
    try:
        print(f"{spec}: database away, NOT_SERVING after {await becomes(service, NOT_SERVING):.1f} s")
        assert await status(service, LIVENESS) == SERVING
        refused = await refused_at_once(spec, service, 1, request_id)
        assert "try again" in (refused.details() or ""), refused.details()
    finally:
        await asyncio.to_thread(restartable_postgres.start)
    print(f"{spec}: database back, SERVING after {await becomes(service, SERVING):.1f} s")

    # The refusal is in the log: who, what, for which purpose, which request.
    [line] = unwritten_entries(caplog)
    assert (line.audit_outcome, line.actor_username, line.purpose, line.request_id) == (
        "UNAVAILABLE",
        spec.user,
        PURPOSE,
        request_id if spec.request_ids else "",
    )
    method = line.audit_action

    # The same request again: answered, and the only change there is (the refusal left none).
    names = await spec.write(service, 1, request_id)
    assert await stored_ids(service) == ids_of(names)
    assert unwritten_entries(caplog) == [line]
    [entry] = await query(
        service.dsn, "SELECT action, outcome, actor_username, purpose, resources FROM audit_log"
    )  # the retry's, and nothing else
    assert (entry["action"], entry["outcome"], entry["actor_username"], entry["purpose"]) == (
        method,
        "OK",
        spec.user,
        PURPOSE,
    )
    assert set(names) <= set(entry["resources"])


async def test_a_database_that_answers_nothing_is_not_waited_on(
    broker: Any, launch: Any, restartable_postgres: Any
) -> None:
    """A database that takes connections and never answers (a partition, a stalled disk): once
    the dependency check gives up on it, calls are refused UNAVAILABLE at once, not left waiting
    on it until the caller's deadline. The platform does this for every service (the
    interceptor chain and ServiceApp's check): entity stands for them."""
    service = await serving(launch, ENTITY, broker, restartable_postgres)
    before = await ENTITY.write(service, 0, str(uuid.uuid4()))  # the pool holds live connections

    request_id = str(uuid.uuid4())
    with restartable_postgres.frozen():
        print(f"database frozen: NOT_SERVING after {await becomes(service, NOT_SERVING):.1f} s")
        await refused_at_once(ENTITY, service, 1, request_id)
    print(f"database thawed: SERVING after {await becomes(service, SERVING):.1f} s")
    names = await ENTITY.write(service, 1, request_id)
    assert await stored_ids(service) == ids_of(before + names), "the refused call stored nothing"
