"""A bare grpc.aio server answering one unary method with the request bytes: the baseline.

With a database URL it also touches PostgreSQL once per call, on the same pooled asyncpg
connections the services use and with no interceptors: `read` (the default) reads one row by
primary key, `write` makes one durable INSERT of the request (its own transaction, committed
with the server's durability). These are the floors a call that reads, or writes, PostgreSQL
cannot go below; the services' reads and writes are measured against them in the same run.

    python -m bench.tasking.echo_server PORT [DATABASE_URL [read|write]]
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from toex_common.db import create_engine, driver_connection


async def echo(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


def reading_echo(database_url: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    engine = create_engine(database_url)

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        async with driver_connection(engine) as conn:
            await conn.fetchrow("SELECT id, state FROM jobs WHERE id = $1", "bench")
        return request

    return handler


def writing_echo(database_url: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
    engine = create_engine(database_url)
    ready = asyncio.Lock()
    created = False

    async def handler(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        nonlocal created
        async with driver_connection(engine) as conn:
            if not created:
                async with ready:
                    await conn.execute(
                        "CREATE TABLE IF NOT EXISTS bench_write_floor "
                        "(id uuid PRIMARY KEY, body bytea NOT NULL, at timestamptz NOT NULL DEFAULT now())"
                    )
                    created = True
            await conn.execute(
                "INSERT INTO bench_write_floor (id, body) VALUES (gen_random_uuid(), $1)", request
            )
        return request

    return handler


async def main(port: int, database_url: str | None, mode: str = "read") -> None:
    handler = echo
    if database_url:
        handler = writing_echo(database_url) if mode == "write" else reading_echo(database_url)
    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(handler)}
            ),
        )
    )
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(
        main(
            int(sys.argv[1]),
            sys.argv[2] if len(sys.argv) > 2 else None,
            sys.argv[3] if len(sys.argv) > 3 else "read",
        )
    )
