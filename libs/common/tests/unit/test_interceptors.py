"""The interceptor chain on a real grpc.aio server on loopback, with a fake token verifier."""

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from toex.tasking.v1 import tasking_pb2
from toex_common.audit import AuditEntry
from toex_common.context import current_principal, touch
from toex_common.grpc.interceptors import DATABASE_UNAVAILABLE, DatabaseState, standard_interceptors
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


async def write(request: tasking_pb2.CreateJobRequest, context: grpc.aio.ServicerContext) -> bytes:
    """A write whose database refuses the connection."""
    touch(request.parent)
    raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


async def stream(request: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[bytes]:
    for i in range(3):
        yield str(i).encode()


class AuditLogAway:
    """The audit log with its database away: every write fails, as PostgresAuditLog's does."""

    async def record(self, entry: AuditEntry) -> None:
        raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@asynccontextmanager
async def things_server(
    audit: Any, meter: Any = None, database: DatabaseState | None = None
) -> AsyncIterator[grpc.aio.Channel]:
    """A server of t.Things behind the standard chain writing to `audit`; a channel to it."""
    handler = grpc.method_handlers_generic_handler(
        "t.Things",
        {
            "Read": grpc.unary_unary_rpc_method_handler(read),
            "Write": grpc.unary_unary_rpc_method_handler(
                write, request_deserializer=tasking_pb2.CreateJobRequest.FromString
            ),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    policy = MethodPolicy(
        {
            "/t.Things/Read": MethodRule.read(Role.RESEARCHER),
            "/t.Things/Write": MethodRule.read(Role.RESEARCHER),
            "/t.Things/Stream": MethodRule.read(Role.RESEARCHER),
        }
    )
    srv, port, health = await create_server(
        register=lambda s: s.add_generic_rpc_handlers((handler,)),
        service_names=["t.Things"],
        interceptors=standard_interceptors(
            service="test",
            verifier=FakeVerifier(),
            policy=policy,
            audit=audit,
            meter=meter,
            database=database,
        ),  # type: ignore[arg-type]
    )
    await srv.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield channel
    finally:
        await channel.close()
        await srv.stop(0)


@pytest.fixture
async def server() -> AsyncIterator[tuple[grpc.aio.Channel, FakeAuditSink]]:
    audit = FakeAuditSink()
    async with things_server(audit) as channel:
        yield channel, audit


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


async def test_a_call_refused_while_the_database_is_away_is_logged_and_counted_not_audited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    caplog.set_level(logging.WARNING, logger="toex_common.grpc.interceptors")
    async with things_server(AuditLogAway(), meter) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await channel.unary_unary("/t.Things/Write")(
                tasking_pb2.CreateJobRequest(parent="regions/EMSOU", request_id="req-7").SerializeToString(),
                metadata=meta("tok-researcher", "Op KESTREL"),
            )

    # The caller is told why and that trying again is safe (the database, not the audit log).
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == DATABASE_UNAVAILABLE
    [line] = [r for r in caplog.records if r.getMessage().startswith("audit entry not written")]
    fields = {k: getattr(line, k) for k in ("audit_action", "audit_outcome", "actor_username", "purpose")}
    assert fields == {
        "audit_action": "/t.Things/Write",
        "audit_outcome": "UNAVAILABLE",
        "actor_username": "researcher.emsou",
        "purpose": "Op KESTREL",
    }
    assert (line.request_id, line.actor_region, line.resources) == (  # type: ignore[attr-defined]
        "req-7",
        "EMSOU",
        ["regions/EMSOU"],
    )
    data = reader.get_metrics_data()
    assert data is not None
    [counted] = [
        (point.value, dict(point.attributes or {}))
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "toex.audit.unwritten"
        for point in metric.data.data_points
    ]
    assert counted == (1, {"rpc.method": "/t.Things/Write", "toex.audit.outcome": "UNAVAILABLE"})


async def test_a_refusal_that_cannot_be_audited_otherwise_answers_that_the_audit_log_is_away() -> None:
    async with things_server(AuditLogAway()) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(channel, b"1", meta("tok-admin"))  # a refusal (PERMISSION_DENIED) owes an entry
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert caught.value.details() == "audit log unavailable; try again"


async def test_while_the_database_is_known_away_calls_are_refused_at_once_without_an_entry(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit, database = FakeAuditSink(), DatabaseState()
    caplog.set_level(logging.WARNING, logger="toex_common.grpc.interceptors")
    async with things_server(audit, database=database) as channel:
        database.away = True
        answers = []
        for token in ("tok-researcher", "tok-admin", None):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call(channel, b"1", meta(token))
            answers.append((caught.value.code(), caught.value.details()))
        # A caller (whatever its role) is told the database is away; a refusal that owes an
        # entry it cannot have (no valid token) is told the audit log is.
        assert answers == [
            (grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE),
            (grpc.StatusCode.UNAVAILABLE, DATABASE_UNAVAILABLE),
            (grpc.StatusCode.UNAVAILABLE, "audit log unavailable; try again"),
        ]
        # The method never ran: nothing read, nothing owed; logged (not the token-less call).
        assert audit.entries == []
        lines = [r for r in caplog.records if r.getMessage().startswith("audit entry not written")]
        assert [(r.actor_username, r.audit_outcome) for r in lines] == [  # type: ignore[attr-defined]
            ("researcher.emsou", "UNAVAILABLE"),
            ("admin.emsou", "UNAVAILABLE"),
        ]

        database.away = False  # the next check found it back
        assert await call(channel, b"2", meta("tok-researcher")) == b"researcher.emsou"
        [entry] = audit.entries
        assert (entry.outcome, entry.resources) == ("OK", ("regions/EMSOU/things/2",))
