"""Cross-cutting concerns as interceptors, outermost first:

    Tracing -> Audit -> ErrorMapping -> Authentication -> Authorisation -> servicer

Each wraps the method's behaviour twice over: `around(method, context, proceed)` for methods
that answer once (unary and client-streaming responses), straight-line code with no generator or
exit stack, and `guard(method, context)`, an async context manager, for streamed responses.
Each is a grpc.aio ServerInterceptor and can be installed as one, but `create_server` applies
the whole chain once, when the servicer's handlers are registered (`GuardChain.wrap`): grpc.aio's
per-call interceptor machinery cost a quarter of a bare server's throughput per interceptor, and
the chain wrapped at registration costs only its own work.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from grpc import aio
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from toex_common.audit import AuditEntry, AuditSink
from toex_common.auth import TokenVerifier
from toex_common.context import CallState, begin_call, current_call, end_call
from toex_common.errors import DomainError, OutOfScope, Unauthenticated, internal_status, to_status
from toex_common.policy import PURPOSE_METADATA_KEY, MethodPolicy, is_public, normalise_purpose
from toex_common.telemetry import extract

log = logging.getLogger(__name__)

Guard = Callable[[str, aio.ServicerContext], contextlib.AbstractAsyncContextManager[None]]
Proceed = Callable[[], Awaitable[Any]]
Around = Callable[[str, aio.ServicerContext, Proceed], Awaitable[Any]]


def metadata_value(context: aio.ServicerContext, key: str) -> str | None:
    for item_key, value in context.invocation_metadata() or ():
        if item_key == key:
            return value if isinstance(value, str) else value.decode()
    return None


class GuardInterceptor(aio.ServerInterceptor):
    """Wraps every method's behaviour in `self.guard(method, context)`."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[grpc.RpcMethodHandler, grpc.RpcMethodHandler]] = {}

    def guard(
        self, method: str, context: aio.ServicerContext
    ) -> contextlib.AbstractAsyncContextManager[None]:
        raise NotImplementedError

    async def around(self, method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        """The method's single answer, computed by `proceed()` inside this interceptor's concern."""
        async with self.guard(method, context):
            return await proceed()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._cache.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(method, handler)
        self._cache[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(self.guard, method, handler, self.around)


class GuardChain:
    """Several guards applied as one, outermost first."""

    def __init__(self, guards: list[GuardInterceptor]) -> None:
        self.guards = list(guards)
        self._around = _compose([g.around for g in self.guards])

    @contextlib.asynccontextmanager
    async def guard(self, method: str, context: aio.ServicerContext) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            for guard in self.guards:
                await stack.enter_async_context(guard.guard(method, context))
            yield

    async def around(self, method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        return await self._around(method, context, proceed)

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        return wrap_handler(self.guard, method, handler, self._around)


def _compose(arounds: list[Around]) -> Around:
    """`arounds` nested outermost first, as one."""
    if not arounds:

        async def bare(method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
            return await proceed()

        return bare
    outer = arounds[0]
    if len(arounds) == 1:
        return outer
    inner = _compose(arounds[1:])

    async def nested(method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        return await outer(method, context, lambda: inner(method, context, proceed))

    return nested


def wrap_handler(
    guard: Guard, method: str, handler: grpc.RpcMethodHandler, around: Around | None = None
) -> grpc.RpcMethodHandler:
    """The same handler with its behaviour run inside `guard(method, context)` (or, for methods
    that answer once, `around(method, context, behaviour)` when given)."""
    if around is None:

        async def around_by_guard(method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
            async with guard(method, context):
                return await proceed()

        around = around_by_guard
    run = around
    if handler.unary_unary:
        inner_uu: Any = handler.unary_unary

        async def unary_unary(request: Any, context: aio.ServicerContext) -> Any:
            return await run(method, context, lambda: inner_uu(request, context))

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary:
        inner_su: Any = handler.stream_unary

        async def stream_unary(requests: Any, context: aio.ServicerContext) -> Any:
            return await run(method, context, lambda: inner_su(requests, context))

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream:
        inner_us: Any = handler.unary_stream

        async def unary_stream(request: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
            async with guard(method, context):
                async for item in inner_us(request, context):
                    yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    inner_ss: Any = handler.stream_stream

    async def stream_stream(requests: Any, context: aio.ServicerContext) -> AsyncIterator[Any]:
        async with guard(method, context):
            async for item in inner_ss(requests, context):
                yield item

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )


def _status_name(context: aio.ServicerContext, exc: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if exc is None:
        return "OK"
    return "UNKNOWN"


class TracingInterceptor(GuardInterceptor):
    """A server span per call, a child of the caller's `traceparent` when it sends one."""

    _CLIENT_ERRORS = frozenset({"NOT_FOUND", "INVALID_ARGUMENT", "FAILED_PRECONDITION", "ALREADY_EXISTS"})

    def __init__(self, service: str) -> None:
        super().__init__()
        self._tracer = trace.get_tracer(service)
        self._methods: dict[str, tuple[str, dict[str, str]]] = {}

    def _start(self, method: str, context: aio.ServicerContext) -> tuple[trace.Span, object]:
        described = self._methods.get(method)
        if described is None:
            service, _, name = method.lstrip("/").rpartition("/")
            described = (
                method.lstrip("/"),
                {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )
            self._methods[method] = described
        metadata = context.invocation_metadata() or ()
        parent = None
        if any(key == "traceparent" for key, _ in metadata):
            parent = extract({k: v for k, v in metadata if isinstance(v, str)})
        span = self._tracer.start_span(
            described[0], context=parent, kind=trace.SpanKind.SERVER, attributes=described[1]
        )
        return span, otel_context.attach(trace.set_span_in_context(span))

    def _finish(
        self, span: trace.Span, token: object, context: aio.ServicerContext, exc: BaseException | None
    ) -> None:
        try:
            if exc is None:
                span.set_attribute("rpc.grpc.status_code", "OK")
            else:
                status = _status_name(context, exc)
                span.set_attribute("rpc.grpc.status_code", status)
                if status not in self._CLIENT_ERRORS:
                    if not isinstance(exc, aio.AbortError):
                        span.record_exception(exc)
                    span.set_status(Status(StatusCode.ERROR, status))
        finally:
            otel_context.detach(token)  # type: ignore[arg-type]
            span.end()

    async def around(self, method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        span, token = self._start(method, context)
        try:
            result = await proceed()
        except BaseException as exc:
            self._finish(span, token, context, exc)
            raise
        self._finish(span, token, context, None)
        return result

    @contextlib.asynccontextmanager
    async def guard(self, method: str, context: aio.ServicerContext) -> AsyncIterator[None]:
        span, token = self._start(method, context)
        try:
            yield
        except BaseException as exc:
            self._finish(span, token, context, exc)
            raise
        self._finish(span, token, context, None)


class AuditInterceptor(GuardInterceptor):
    """Records every non-public call with its outcome. A call whose audit entry cannot be
    written fails with UNAVAILABLE: no read goes unlogged."""

    def __init__(self, sink: AuditSink) -> None:
        super().__init__()
        self._sink = sink

    async def _record(
        self, method: str, context: aio.ServicerContext, state: CallState, failure: BaseException | None
    ) -> None:
        outcome = state.audit_outcome or _status_name(context, failure)
        principal = state.principal
        entry = AuditEntry(
            action=method,
            outcome=outcome,
            actor_subject=principal.subject if principal else "",
            actor_username=principal.username if principal else "",
            actor_roles=principal.role_names if principal else (),
            actor_region=principal.region.value if principal else "",
            resources=tuple(state.resources),
            purpose=state.purpose,
            peer=state.peer,
        )
        try:
            await self._sink.record(entry)
        except Exception:
            log.exception("audit entry for %s could not be written", method)
            if failure is None:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "audit log unavailable; try again")

    async def around(self, method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        if is_public(method):
            return await proceed()
        async with _Audited(self, method, context):
            return await proceed()

    def guard(
        self, method: str, context: aio.ServicerContext
    ) -> contextlib.AbstractAsyncContextManager[None]:
        return contextlib.nullcontext() if is_public(method) else _Audited(self, method, context)


class _Audited:
    """One call's audit: its state while it runs, its entry when it ends. A class rather than a
    generator: an async generator per call costs the event loop's bookkeeping of generators."""

    __slots__ = ("_audit", "_context", "_method", "_state", "_token")

    def __init__(self, audit: AuditInterceptor, method: str, context: aio.ServicerContext) -> None:
        self._audit, self._method, self._context = audit, method, context

    async def __aenter__(self) -> None:
        self._state = CallState(method=self._method, peer=self._context.peer() or "")
        self._token = begin_call(self._state)

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        end_call(self._token)
        await self._audit._record(self._method, self._context, self._state, exc)


class ErrorMappingInterceptor(GuardInterceptor):
    """The one place domain errors become gRPC statuses with google.rpc.Status details."""

    async def _abort(self, method: str, context: aio.ServicerContext, exc: Exception) -> None:
        if isinstance(exc, DomainError):
            if isinstance(exc, OutOfScope):
                state = current_call()
                if state is not None:
                    state.audit_outcome = "DENIED_OUT_OF_SCOPE"
            code, status = exc.code, to_status(exc)
        else:
            log.error("unhandled error in %s", method, exc_info=exc)
            code, status = grpc.StatusCode.INTERNAL, internal_status()
        await context.abort(
            code, status.message, trailing_metadata=(("grpc-status-details-bin", status.SerializeToString()),)
        )

    async def around(self, method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        try:
            return await proceed()
        except aio.AbortError:
            raise
        except Exception as exc:
            await self._abort(method, context, exc)
            raise  # not reached: abort raises

    @contextlib.asynccontextmanager
    async def guard(self, method: str, context: aio.ServicerContext) -> AsyncIterator[None]:
        try:
            yield
        except aio.AbortError:
            raise
        except Exception as exc:
            await self._abort(method, context, exc)


class AuthenticationInterceptor(GuardInterceptor):
    def __init__(self, verifier: TokenVerifier) -> None:
        super().__init__()
        self._verifier = verifier

    async def _authenticate(self, method: str, context: aio.ServicerContext) -> None:
        if is_public(method):
            return
        header = metadata_value(context, "authorization") or ""
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated(
                "send `authorization: Bearer <access token>`; get a token with `toex login`"
            )
        principal = await self._verifier.verify(token.strip())
        state = current_call()
        if state is not None:
            state.principal = principal

    async def around(self, method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        await self._authenticate(method, context)
        return await proceed()

    @contextlib.asynccontextmanager
    async def guard(self, method: str, context: aio.ServicerContext) -> AsyncIterator[None]:
        await self._authenticate(method, context)
        yield


class AuthorisationInterceptor(GuardInterceptor):
    def __init__(self, policy: MethodPolicy) -> None:
        super().__init__()
        self._policy = policy

    def _authorise(self, method: str, context: aio.ServicerContext) -> None:
        if is_public(method):
            return
        state = current_call()
        if state is None or state.principal is None:
            raise Unauthenticated("no authenticated caller")
        state.purpose = normalise_purpose(metadata_value(context, PURPOSE_METADATA_KEY))
        self._policy.check(state.principal, method, state.purpose)

    async def around(self, method: str, context: aio.ServicerContext, proceed: Proceed) -> Any:
        self._authorise(method, context)
        return await proceed()

    @contextlib.asynccontextmanager
    async def guard(self, method: str, context: aio.ServicerContext) -> AsyncIterator[None]:
        self._authorise(method, context)
        yield


def standard_interceptors(
    *, service: str, verifier: TokenVerifier, policy: MethodPolicy, audit: AuditSink
) -> list[GuardInterceptor]:
    return [
        TracingInterceptor(service),
        AuditInterceptor(audit),
        ErrorMappingInterceptor(),
        AuthenticationInterceptor(verifier),
        AuthorisationInterceptor(policy),
    ]
