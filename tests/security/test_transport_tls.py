"""Finding 3 (in part): transport security for gRPC and NATS.

gRPC servers listened in plaintext and NATS took plaintext connections, so anyone on the path
read bearer tokens and intelligence. A service can now serve gRPC over TLS, requiring client
certificates (mutual TLS between services), and reach NATS over TLS with its own certificate.
Certificates are made here, at test time; the local stack stays plaintext on loopback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import nats
import nats.errors
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from toex.entity.v1 import entity_pb2 as pb
from toex.entity.v1 import entity_pb2_grpc
from toex_devstack.nats import NatsServer

from .conftest import md, start_service


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


class Authority:
    """A certificate authority of this test alone, issuing PEM files into `directory`."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = directory / f"{name}-ca.pem"
        self.ca_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, name: str) -> tuple[Path, Path]:
        """A certificate for 127.0.0.1 and localhost, usable by a server and as a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = self.directory / f"{name}.pem", self.directory / f"{name}-key.pem"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        return cert_file, key_file


@pytest.fixture
def pki() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="toex-pki-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


async def test_grpc_with_mutual_tls_and_nats_over_tls(pki, database, keycloak, tokens) -> None:  # type: ignore[no-untyped-def]
    ca = Authority(pki, "toex-test")
    server_cert, server_key = ca.issue("entity")
    client_cert, client_key = ca.issue("tasking")
    nats_cert, nats_key = ca.issue("nats")
    broker = NatsServer(store_dir=pki / "nats-store", tls=(nats_cert, nats_key, ca.ca_file))
    broker.start()
    service: Any = None
    try:
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
            nats_url=broker.url,
            issuer=keycloak.issuer,
            tokens=tokens,
            nats_tls_ca_file=str(ca.ca_file),
            nats_tls_cert_file=str(client_cert),
            nats_tls_key_file=str(client_key),
            grpc_tls_cert_file=str(server_cert),
            grpc_tls_key_file=str(server_key),
            grpc_tls_client_ca_file=str(ca.ca_file),
        )
        assert service.app.nc.is_connected and service.app.nc.connected_url.scheme == "tls"
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
        other = Authority(pki, "someone-else")  # a client that trusts another CA: a man in the middle's
        await refused(grpc.aio.secure_channel(address, credentials(other.ca_file, True)))
    finally:
        if service is not None:
            await service.app.server.stop(1)
            await service.app.shutdown()
        broker.stop()
