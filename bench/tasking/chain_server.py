"""The bare echo method behind the full toex interceptor chain (real token verification against
Keycloak's JWKS, policy, audit group-committed to PostgreSQL, tracing, error mapping): the cost of
the chain alone, with no business logic or database work of its own.

    python -m bench.tasking.chain_server PORT DATABASE_URL ISSUER
"""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from toex_common.audit import PostgresAuditLog
from toex_common.auth import TokenVerifier
from toex_common.db import create_engine
from toex_common.grpc.interceptors import Proceed, standard_interceptors
from toex_common.grpc.server import create_server
from toex_common.telemetry import configure_tracing
from toex_kernel.policy import MethodPolicy, MethodRule
from toex_kernel.principal import Role


class _Noop:
    async def around(self, method: str, context: grpc.aio.ServicerContext, proceed: Proceed) -> Any:
        return await proceed()


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def main(port: int, database_url: str, issuer: str) -> None:
    configure_tracing("bench-chain")
    engine = create_engine(database_url)
    audit: object = PostgresAuditLog(engine)
    variant = os.environ.get("BENCH_VARIANT", "full")
    if variant == "no-audit":
        from toex_common.testing.fakes import FakeAuditSink

        audit = FakeAuditSink()
    handler = grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(echo)}
    )
    policy = MethodPolicy({"/bench.Echo/Echo": MethodRule.read(*Role)})
    server, _, health = await create_server(
        register=lambda s: s.add_generic_rpc_handlers((handler,)),
        service_names=["bench.Echo"],
        interceptors=[]
        if variant == "none"
        else [_Noop() for _ in range(int(variant[4:]))]
        if variant.startswith("noop")
        else standard_interceptors(
            service="bench",
            verifier=TokenVerifier(issuer, "toex"),
            policy=policy,
            audit=audit,  # type: ignore[arg-type]
        ),
        port=port,
    )
    await server.start()
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
