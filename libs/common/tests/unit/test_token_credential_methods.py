"""The one method called without a bearer token because its request carries its own credential
(toex_kernel.policy.TOKEN_CREDENTIAL_METHODS): let through unauthenticated and audited; every
other method still needs a token, and a bearer token sent to it is checked as usual."""

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from toex_common.context import current_principal_or_none, touch
from toex_common.grpc.interceptors import standard_interceptors
from toex_common.grpc.server import create_server
from toex_common.testing.fakes import FakeAuditSink, principal
from toex_kernel.errors import Unauthenticated
from toex_kernel.policy import TOKEN_CREDENTIAL_METHODS, MethodPolicy, MethodRule
from toex_kernel.principal import Principal, Role

SERVICE = "toex.tasking.v1.TaskingService"
USERS = {
    "tok-supervisor": principal("supervisor.emsou", Role.SUPERVISOR),
    "tok-researcher": principal("researcher.emsou", Role.RESEARCHER),
}


class FakeVerifier:
    async def verify(self, token: str) -> Principal:
        if token not in USERS:
            raise Unauthenticated("token rejected")
        return USERS[token]


async def answer(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    touch("regions/EMSOU/jobs/j1")
    caller = current_principal_or_none()
    return (caller.username if caller else "anonymous").encode()


@pytest.fixture
async def channel() -> AsyncIterator[tuple[grpc.aio.Channel, FakeAuditSink]]:
    audit = FakeAuditSink()
    handler = grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "RecordFeedback": grpc.unary_unary_rpc_method_handler(answer),
            "GetJob": grpc.unary_unary_rpc_method_handler(answer),
        },
    )
    policy = MethodPolicy(
        {
            f"/{SERVICE}/RecordFeedback": MethodRule.write(Role.SUPERVISOR),
            f"/{SERVICE}/GetJob": MethodRule.read(Role.SUPERVISOR, purpose_required=False),
        }
    )
    srv, port, _health = await create_server(
        register=lambda s: s.add_generic_rpc_handlers((handler,)),
        service_names=[SERVICE],
        interceptors=standard_interceptors(
            service="test", verifier=FakeVerifier(), policy=policy, audit=audit
        ),  # type: ignore[arg-type]
    )
    await srv.start()
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield ch, audit
    finally:
        await ch.close()
        await srv.stop(0)


def call(ch: grpc.aio.Channel, method: str, token: str | None = None):
    metadata = [("authorization", f"Bearer {token}")] if token else None
    return ch.unary_unary(f"/{SERVICE}/{method}")(b"x", metadata=metadata)


def test_the_allow_list_is_exactly_record_feedback() -> None:
    assert frozenset({f"/{SERVICE}/RecordFeedback"}) == TOKEN_CREDENTIAL_METHODS


async def test_record_feedback_without_a_bearer_token_runs_anonymously_and_is_audited(channel) -> None:
    ch, audit = channel
    assert await call(ch, "RecordFeedback") == b"anonymous"
    for _ in range(100):
        if audit.entries:
            break
        await asyncio.sleep(0.01)
    [entry] = audit.entries
    assert (entry.action, entry.outcome, entry.actor_username) == (
        f"/{SERVICE}/RecordFeedback",
        "OK",
        "(one-time token)",
    )
    assert entry.resources == ("regions/EMSOU/jobs/j1",)


async def test_other_methods_still_need_a_bearer_token(channel) -> None:
    ch, _ = channel
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call(ch, "GetJob")
    assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_a_bearer_token_sent_to_it_is_verified_and_its_rule_applied(channel) -> None:
    ch, _ = channel
    assert await call(ch, "RecordFeedback", "tok-supervisor") == b"supervisor.emsou"
    with pytest.raises(grpc.aio.AioRpcError) as wrong_role:
        await call(ch, "RecordFeedback", "tok-researcher")
    assert wrong_role.value.code() is grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await call(ch, "RecordFeedback", "tok-forged")
    assert bad_token.value.code() is grpc.StatusCode.UNAUTHENTICATED
