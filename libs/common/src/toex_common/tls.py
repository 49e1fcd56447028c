"""Transport security from settings, one helper per link: the gRPC server (TLS, and mutual TLS
when a client CA is set), gRPC channels to other services (with this service's client
certificate), and NATS (TLS with a client certificate). Files are PEM; a setting left empty
means plaintext, which only the local stack on loopback uses."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc
from grpc import aio

from toex_common.config import ServiceSettings


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC server; clients must present a certificate signed by
    `grpc_tls_client_ca_file` when it is set (mutual TLS between services)."""
    if not settings.grpc_tls_cert_file:
        return None
    client_ca = _read(settings.grpc_tls_client_ca_file) if settings.grpc_tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(_read(settings.grpc_tls_key_file), _read(settings.grpc_tls_cert_file))],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel(
    address: str,
    settings: ServiceSettings,
    options: list[tuple[str, object]] | None = None,
    interceptors: list[aio.ClientInterceptor] | None = None,
) -> aio.Channel:
    """A channel to another toex service: TLS verified against `grpc_tls_ca_file`, presenting
    this service's certificate, when those are set; plaintext otherwise."""
    if not settings.grpc_tls_ca_file:
        return aio.insecure_channel(address, options=options, interceptors=interceptors)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=_read(settings.grpc_tls_ca_file),
        private_key=_read(settings.grpc_tls_key_file) if settings.grpc_tls_key_file else None,
        certificate_chain=_read(settings.grpc_tls_cert_file) if settings.grpc_tls_cert_file else None,
    )
    return aio.secure_channel(address, credentials, options=options, interceptors=interceptors)


def nats_context(settings: ServiceSettings) -> ssl.SSLContext | None:
    """TLS to NATS, verifying the server against `nats_tls_ca_file`, with this service's client
    certificate when one is set."""
    if not settings.nats_tls_ca_file:
        return None
    context = ssl.create_default_context(cafile=settings.nats_tls_ca_file)
    if settings.nats_tls_cert_file:
        context.load_cert_chain(settings.nats_tls_cert_file, settings.nats_tls_key_file or None)
    return context
