"""Page server time, when switched on (`TOEX_SERVER_TIMING=true`; the benchmark does): each
response carries `Server-Timing: app;dur=<ms>, grpc;dur=<ms>, calls;desc="<n>"`, the time from
the request reaching the console to the response's headers (the page is rendered by then) and
the part of it spent awaiting gRPC calls. Off by default: response times are nobody's business
but the operators'."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from grpc import aio
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The gRPC time of the request being served (None outside a timed request).
_spent: ContextVar[list[float] | None] = ContextVar("toex_console_grpc_ms", default=None)


class ServerTiming:
    """Plain ASGI middleware (no extra task per request) adding the Server-Timing header."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        spent: list[float] = []
        token = _spent.set(spent)
        started = time.perf_counter()

        async def timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                total = (time.perf_counter() - started) * 1000
                value = f'app;dur={total:.2f}, grpc;dur={sum(spent):.2f}, calls;desc="{len(spent)}"'
                message = {
                    **message,
                    "headers": [*message.get("headers", []), (b"server-timing", value.encode())],
                }
            await send(message)

        try:
            await self._app(scope, receive, timed)
        finally:
            _spent.reset(token)


class GrpcTimer(aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Adds each unary call's time, to its answer or failure, to the timed request's account."""

    async def intercept_unary_unary(
        self, continuation: Callable[[Any, Any], Any], client_call_details: Any, request: Any
    ) -> Any:
        spent = _spent.get()
        started = time.perf_counter()
        call = await continuation(client_call_details, request)
        if spent is not None:
            try:
                await call
            except aio.AioRpcError:
                pass  # the caller awaits the call again and sees the failure
            finally:
                spent.append((time.perf_counter() - started) * 1000)
        return call
