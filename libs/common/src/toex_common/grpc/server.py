"""`create_server` and the serve loop: health, reflection, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from toex_common.grpc.interceptors import Interceptor, InterceptorChain
from toex_common.installation import Gate

log = logging.getLogger(__name__)


class _GenericGuarded(grpc.GenericRpcHandler):
    def __init__(
        self, inner: grpc.GenericRpcHandler, chain: InterceptorChain, gates: Mapping[str, Gate]
    ) -> None:
        self._inner = inner
        self._chain = chain
        self._gates = gates
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = self._inner.service(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, self._chain.wrap(method, handler, self._gates.get(method)))
            self._cache[method] = cached
        return cached[1]


class _Guarded:
    """What servicers are registered on: the server, with every handler wrapped in the guard chain."""

    def __init__(self, server: aio.Server, chain: InterceptorChain, gates: Mapping[str, Gate]) -> None:
        self._server = server
        self._chain = chain
        self._gates = gates

    def add_generic_rpc_handlers(self, handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._server.add_generic_rpc_handlers(
            [_GenericGuarded(h, self._chain, self._gates) for h in handlers]
        )

    def add_registered_method_handlers(
        self, service: str, handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(  # type: ignore[attr-defined]
            service,
            {
                name: self._chain.wrap(f"/{service}/{name}", h, self._gates.get(f"/{service}/{name}"))
                for name, h in handlers.items()
            },
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._server, name)


# The health name the kubelet's liveness probe asks for: SERVING while the process serves, even
# when the database or broker is away (which only makes the service unready, "" and its own
# names NOT_SERVING): restarting it would not bring them back.
LIVENESS = "liveness"


async def create_server(
    *,
    register: Callable[[aio.Server], None],
    service_names: Iterable[str],
    interceptors: Sequence[Interceptor] = (),
    host: str = "127.0.0.1",
    port: int = 0,
    options: Sequence[tuple[str, Any]] = (),
    credentials: grpc.ServerCredentials | None = None,
    gates: Mapping[str, Gate] | None = None,
) -> tuple[aio.Server, int, HealthServicer]:
    """Build a server with the given servicers, health and reflection; bind `host:port`
    (port 0 picks a free one); `options` are extra grpc channel arguments (e.g. message size limits
    for uploads); with `credentials` it listens with TLS only; `gates` check a method's requests
    inside the chain, before its servicer (toex_common.installation). Returns the server, its
    bound port and the health servicer."""
    server = aio.server(options=[("grpc.so_reuseport", 0), *options])
    guarded = interceptors or gates
    register(_Guarded(server, InterceptorChain(interceptors), gates or {}) if guarded else server)  # type: ignore[arg-type]
    health_servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = list(service_names)
    reflection.enable_server_reflection([*names, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind {host}:{port}")
    for name in ["", LIVENESS, *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
    return server, bound, health_servicer


def create_health_server(health_servicer: HealthServicer, *, host: str, port: int) -> tuple[aio.Server, int]:
    """A plaintext server answering grpc.health.v1 only, from the service's own health servicer:
    for probes that cannot present a client certificate (the kubelet's) when the service's own
    port requires one. It says SERVING or NOT_SERVING and nothing else."""
    server = aio.server(options=[("grpc.so_reuseport", 0)])
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the health port {host}:{port}")
    return server, bound


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
    # Everything built so far (modules, the service's objects) lives as long as the process:
    # keep it out of the collector's generations, so collections walk only what calls create.
    gc.collect()
    gc.freeze()
    names = ["", LIVENESS, *service_names]
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
