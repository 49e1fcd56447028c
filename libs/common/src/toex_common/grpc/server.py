"""`create_server` and the serve loop: health, reflection, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

log = logging.getLogger(__name__)


async def create_server(
    *,
    register: Callable[[aio.Server], None],
    service_names: Iterable[str],
    interceptors: Sequence[aio.ServerInterceptor] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    options: Sequence[tuple[str, Any]] = (),
) -> tuple[aio.Server, int, HealthServicer]:
    """Build a server with the given servicers, health and reflection; bind `host:port`
    (port 0 picks a free one); `options` are extra grpc channel arguments (e.g. message size limits
    for uploads). Returns the server, its bound port and the health servicer."""
    server = aio.server(interceptors=list(interceptors), options=[("grpc.so_reuseport", 0), *options])
    register(server)
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, bound, health_servicer


async def serve_until_signal(
    server: aio.Server,
    health_servicer: HealthServicer,
    *,
    service_names: Iterable[str],
    grace_seconds: float,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`): go NOT_SERVING so probes drain traffic, stop
    accepting, let in-flight calls finish within the grace period, then run `on_stop`
    (drain NATS, stop background tasks)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    names = ["", *service_names]
    for name in names:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info("serving")
    await stop.wait()
    log.info("stopping: finishing in-flight calls (grace %.0fs)", grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    await server.stop(grace_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")
