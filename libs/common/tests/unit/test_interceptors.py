"""The interceptor chain on a real grpc.aio server on loopback, with a fake token verifier."""

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from toex_common.context import current_principal, touch
from toex_common.grpc.interceptors import standard_interceptors
from toex_common.grpc.server import create_server
from toex_common.testing.fakes import FakeAuditSink, principal
from toex_kernel.errors import InvalidArgument, OutOfScope, Unauthenticated
from toex_kernel.policy import MethodPolicy, MethodRule
from toex_kernel.principal import Principal, Role

USERS = {
    "tok-researcher": principal("researcher.emsou", Role.RESEARCHER),
    "tok-admin": principal("admin.emsou", Role.ADMIN),
}


class FakeVerifier:
    async def verify(self, token: str) -> Principal:
        if token not in USERS:
            raise Unauthenticated("token rejected")
        return USERS[token]


async def read(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    touch("regions/EMSOU/things/" + request.decode())
    if request == b"hidden":
        raise OutOfScope("thing not found")
    if request == b"bad":
        raise InvalidArgument.field("name", "no good")
    if request == b"boom":
        raise RuntimeError("unexpected")
    return current_principal().username.encode()


async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        yield str(i).encode()


@pytest.fixture
async def server() -> AsyncIterator[tuple[grpc.aio.Channel, FakeAuditSink]]:
    audit = FakeAuditSink()
    handler = grpc.method_handlers_generic_handler(
        "t.Things",
        {
            "Read": grpc.unary_unary_rpc_method_handler(read),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    policy = MethodPolicy(
        {
            "/t.Things/Read": MethodRule.read(Role.RESEARCHER),
            "/t.Things/Stream": MethodRule.read(Role.RESEARCHER),
        }
    )
    srv, port, health = await create_server(
        register=lambda s: s.add_generic_rpc_handlers((handler,)),
        service_names=["t.Things"],
        interceptors=standard_interceptors(
            service="test", verifier=FakeVerifier(), policy=policy, audit=audit
        ),  # type: ignore[arg-type]
    )
    await srv.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield channel, audit
    await channel.close()
    await srv.stop(0)


async def last_entry(audit: FakeAuditSink, count: int = 1):
    """An aborted call's status reaches the client before the audit entry is written."""
    for _ in range(100):
        if len(audit.entries) >= count:
            return audit.entries[-1]
        await asyncio.sleep(0.01)
    raise AssertionError("no audit entry written")


def meta(token: str | None, purpose: str | None = "Op TEST") -> list[tuple[str, str]]:
    items = []
    if token:
        items.append(("authorization", f"Bearer {token}"))
    if purpose:
        items.append(("x-toex-purpose", purpose))
    return items


async def call(channel: grpc.aio.Channel, body: bytes, metadata: list[tuple[str, str]]) -> bytes:
    return await channel.unary_unary("/t.Things/Read")(body, metadata=metadata)


async def test_authorised_read_is_served_and_audited(server) -> None:
    channel, audit = server
    assert await call(channel, b"1", meta("tok-researcher")) == b"researcher.emsou"
    [entry] = audit.entries
    assert (entry.action, entry.outcome, entry.actor_username, entry.actor_region) == (
        "/t.Things/Read",
        "OK",
        "researcher.emsou",
        "EMSOU",
    )
    assert entry.purpose == "Op TEST"
    assert entry.resources == ("regions/EMSOU/things/1",)


async def test_missing_token_is_unauthenticated_and_audited(server) -> None:
    channel, audit = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, b"1", meta(None))
    assert caught.value.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "toex login" in caught.value.details()
    assert (await last_entry(audit)).outcome == "UNAUTHENTICATED"


async def test_role_without_access_is_permission_denied(server) -> None:
    channel, audit = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, b"1", meta("tok-admin"))
    assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert (await last_entry(audit)).actor_username == "admin.emsou"


async def test_read_without_purpose_is_failed_precondition_with_details(server) -> None:
    channel, _ = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, b"1", meta("tok-researcher", purpose=None))
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    status = rpc_status.from_call(caught.value)
    failure = error_details_pb2.PreconditionFailure()
    assert status is not None and status.details[0].Unpack(failure)
    assert failure.violations[0].subject == "x-toex-purpose"


async def test_out_of_scope_answers_not_found_but_audits_denial(server) -> None:
    channel, audit = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, b"hidden", meta("tok-researcher"))
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert (await last_entry(audit)).outcome == "DENIED_OUT_OF_SCOPE"


async def test_invalid_argument_carries_field_violations(server) -> None:
    channel, _ = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, b"bad", meta("tok-researcher"))
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(caught.value)
    request = error_details_pb2.BadRequest()
    assert status is not None and status.details[0].Unpack(request)
    assert request.field_violations[0].field == "name"


async def test_unexpected_error_is_internal_without_leaking(server) -> None:
    channel, audit = server
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call(channel, b"boom", meta("tok-researcher"))
    assert caught.value.code() is grpc.StatusCode.INTERNAL
    assert "unexpected" not in caught.value.details()
    assert (await last_entry(audit)).outcome == "INTERNAL"


async def test_streaming_methods_pass_through_the_chain(server) -> None:
    channel, audit = server
    items = [m async for m in channel.unary_stream("/t.Things/Stream")(b"", metadata=meta("tok-researcher"))]
    assert items == [b"0", b"1", b"2"]
    assert (await last_entry(audit)).action == "/t.Things/Stream"


async def test_health_needs_no_token_and_is_not_audited(server) -> None:
    channel, audit = server
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
    assert response.status == health_pb2.HealthCheckResponse.SERVING
    assert audit.entries == []
