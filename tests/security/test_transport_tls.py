"""Finding 3: transport security for gRPC, NATS and PostgreSQL.

gRPC servers listened in plaintext and NATS took plaintext connections, so anyone on the path
read bearer tokens and intelligence. A service can now serve gRPC over TLS, requiring client
certificates (mutual TLS between services), and reach NATS over TLS with its own certificate.
Certificates are made here, at test time; the local stack stays plaintext on loopback.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import nats
import nats.errors
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex_cli.context import open_channel
from toex_devstack._proc import free_port
from toex_devstack.nats import NatsServer
from toex_devstack.pki import Authority
from toex_devstack.postgres import Postgres

from .conftest import md, start_service


@pytest.fixture
def pki() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="toex-pki-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def test_grpc_with_mutual_tls_and_nats_and_postgresql_over_tls(
    pki, keycloak, tokens, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    ca = Authority(pki, "toex-test")
    server_cert, server_key = ca.issue("entity")
    client_cert, client_key = ca.issue("tasking")
    nats_cert, nats_key = ca.issue("nats")
    db_cert, db_key = ca.issue("postgres")
    broker = NatsServer(store_dir=pki / "nats-store", tls=(nats_cert, nats_key, ca.ca_file))
    broker.start()
    database_server = Postgres(
        data_dir=Path(tempfile.mkdtemp(prefix="toex-pg-tls-")), fsync=False, tls=(db_cert, db_key)
    )
    database_server.start()
    # As the chart sets it: asyncpg verifies the server's certificate and name with this CA.
    monkeypatch.setenv("PGSSLROOTCERT", str(ca.ca_file))
    database = database_server.create_database("toex_entity_tls")
    health_port = free_port()
    service: Any = None
    try:
        # A client that trusts another CA does not reach the database (verify-full).
        other = Authority(pki, "someone-else")
        with pytest.raises(ssl.SSLError):
            await asyncpg.connect(
                database_server.dsn("toex_entity_tls"),
                ssl=ssl.create_default_context(cafile=str(other.ca_file)),
            )

        # A plaintext NATS client is refused by the broker (it never gets a connection).
        with pytest.raises((nats.errors.Error, OSError, TimeoutError)):
            await asyncio.wait_for(
                nats.connect(
                    broker.url.replace("tls://", "nats://"), connect_timeout=2, max_reconnect_attempts=0
                ),
                5,
            )

        service = await start_service(
            "toex_entity",
            entity_pb2_grpc.EntityResolutionServiceStub,
            database=database,
            database_query="?ssl=verify-full",
            nats_url=broker.url,
            issuer=keycloak.issuer,
            tokens=tokens,
            postgres=database_server,
            grpc_health_port=health_port,
            nats_tls_ca_file=str(ca.ca_file),
            nats_tls_cert_file=str(client_cert),
            nats_tls_key_file=str(client_key),
            grpc_tls_cert_file=str(server_cert),
            grpc_tls_key_file=str(server_key),
            grpc_tls_client_ca_file=str(ca.ca_file),
        )
        assert service.app.nc.is_connected and service.app.nc.connected_url.scheme == "tls"
        async with service.app.engine.connect() as connection:
            assert (
                await connection.exec_driver_sql("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            ).scalar()
        await service.channel.close()
        address = f"127.0.0.1:{service.app.port}"

        def credentials(root: Path, with_client_cert: bool) -> grpc.ChannelCredentials:
            return grpc.ssl_channel_credentials(
                root_certificates=root.read_bytes(),
                private_key=client_key.read_bytes() if with_client_cert else None,
                certificate_chain=client_cert.read_bytes() if with_client_cert else None,
            )

        # Another service, with the CA and its own certificate: served.
        async with grpc.aio.secure_channel(address, credentials(ca.ca_file, True)) as channel:
            stub = entity_pb2_grpc.EntityResolutionServiceStub(channel)
            found = await stub.SearchEntities(
                pb.SearchEntitiesRequest(name="Nobody Here"),
                metadata=md(tokens["researcher.emsou"]),
                timeout=10,
            )
            assert not found.matches

        async def refused(channel: grpc.aio.Channel) -> None:
            async with channel:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    await health_pb2_grpc.HealthStub(channel).Check(
                        health_pb2.HealthCheckRequest(), timeout=3
                    )
                assert error.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)

        await refused(grpc.aio.insecure_channel(address))  # plaintext: no bearer token leaves in clear
        await refused(
            grpc.aio.secure_channel(address, credentials(ca.ca_file, False))
        )  # no client certificate
        # A client that trusts another CA (a man in the middle's certificate would pass it).
        await refused(grpc.aio.secure_channel(address, credentials(other.ca_file, True)))

        # The CLI, given the installation's CA and a certificate of its own (TOEX_TLS_*).
        monkeypatch.setenv("TOEX_TLS_CA_FILE", str(ca.ca_file))
        monkeypatch.setenv("TOEX_TLS_CERT_FILE", str(client_cert))
        monkeypatch.setenv("TOEX_TLS_KEY_FILE", str(client_key))
        cli_channel = open_channel(f"tls://{address}")
        try:
            answer = await asyncio.to_thread(
                health_pb2_grpc.HealthStub(cli_channel).Check, health_pb2.HealthCheckRequest(), timeout=5
            )
            assert answer.status in (
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.NOT_SERVING,
            )
        finally:
            cli_channel.close()

        # The kubelet's probes, which have no client certificate, get health on a port of its
        # own, and nothing else there.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            answer = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=3
            )
            assert answer.status in (
                health_pb2.HealthCheckResponse.SERVING,
                health_pb2.HealthCheckResponse.NOT_SERVING,
            )
            with pytest.raises(grpc.aio.AioRpcError) as error:
                await entity_pb2_grpc.EntityResolutionServiceStub(channel).SearchEntities(
                    pb.SearchEntitiesRequest(name="Nobody Here"),
                    metadata=md(tokens["researcher.emsou"]),
                    timeout=3,
                )
            assert error.value.code() == grpc.StatusCode.UNIMPLEMENTED
    finally:
        if service is not None:
            await service.app.server.stop(1)
            await service.app.shutdown()
        broker.stop()
        database_server.stop()
        shutil.rmtree(database_server.data_dir, ignore_errors=True)
