"""Backpressure and health: a service whose database or broker is away says so.

While either is down its gRPC health answers NOT_SERVING (Kubernetes stops routing to it), a
call that needs the database is refused UNAVAILABLE at once rather than after the caller's
deadline, and once both are back the service reports SERVING again by itself.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from toex_common.grpc.server import LIVENESS

from .matrix import ENTITY

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


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


async def test_health_follows_the_database_and_the_broker(
    broker: Any, launch: Any, restartable_postgres: Any
) -> None:
    service = await launch(
        ENTITY, postgres=restartable_postgres, nats_url=broker.url, dependency_check_seconds=0.2
    )
    # As `serve` does once it listens.
    for name in ["", LIVENESS, *service.app.service_names]:
        await service.app.health.set(name, SERVING)

    broker.stop()
    try:
        print(f"broker away: NOT_SERVING after {await becomes(service, NOT_SERVING):.1f} s")
        # Unready, not dead: the liveness probe's name stays SERVING (a restart would not help).
        assert await status(service, LIVENESS) == SERVING
    finally:
        broker.start()
    print(f"broker back: SERVING after {await becomes(service, SERVING):.1f} s")

    await asyncio.to_thread(restartable_postgres.stop)
    try:
        print(f"database away: NOT_SERVING after {await becomes(service, NOT_SERVING):.1f} s")
        started = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await ENTITY.write(service, 1, "health-1")
        took = time.monotonic() - started
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, refused.value
        assert took < 5, f"refused only after {took:.1f} s"
    finally:
        await asyncio.to_thread(restartable_postgres.start)
    print(f"database back: SERVING after {await becomes(service, SERVING):.1f} s")
    assert await ENTITY.write(service, 2, "health-2")
