"""Settings from the environment, one object per service (prefix TOEX_)."""

from __future__ import annotations

from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service needs. A service subclasses this for settings of its own."""

    model_config = SettingsConfigDict(env_prefix="TOEX_", extra="ignore")

    service_name: str = "toex"
    # The installation's region (NATIONAL at the hub): names the subjects of what the
    # installation publishes about itself, such as its audit anchors.
    region: str = "NATIONAL"
    # What this installation is (the chart's `role`): "region" serves, stores and publishes only
    # `region`'s resources; "hub" holds the national team's own work (region NATIONAL) and the
    # read models built from every region's sourced streams; "single" is one installation
    # serving every region (the local stack, docker-compose, small deployments, the tests).
    installation: Literal["single", "region", "hub"] = "single"
    # How often the audit chain's head is published to JetStream (stream AUDIT).
    audit_anchor_seconds: float = 60.0
    # The service connects as its runtime role: rows in, rows out, the audit log append-only.
    database_url: str = "postgresql+asyncpg://toex:toex@127.0.0.1:5432/toex"
    # `migrate` connects as the role that owns the tables (empty: the runtime URL, for a stack
    # with one role), and grants the runtime role what it needs and no more.
    migration_database_url: str = ""
    nats_url: str = "nats://127.0.0.1:4222"
    oidc_issuer: str = "http://127.0.0.1:8080/realms/toex"
    oidc_audience: str = "toex"
    oidc_algorithms: tuple[str, ...] = ("RS256", "PS256", "ES256")
    # How often the realm's signing keys are fetched again: a retired key (and every token it
    # signed) stops working within this time.
    jwks_refresh_seconds: float = 300.0
    grpc_host: str = "127.0.0.1"
    # Transport security (PEM files; empty = plaintext, for the local stack on loopback only).
    # The gRPC server's certificate and key; with a client CA, callers must present a
    # certificate it signed (mutual TLS between services).
    grpc_tls_cert_file: str = ""
    grpc_tls_key_file: str = ""
    grpc_tls_client_ca_file: str = ""
    # The CA that signed other services' server certificates (channels to them use TLS, and
    # present this service's certificate above).
    grpc_tls_ca_file: str = ""
    # NATS over TLS: the CA of the NATS servers, and this service's client certificate.
    nats_tls_ca_file: str = ""
    nats_tls_cert_file: str = ""
    nats_tls_key_file: str = ""
    grpc_port: int = 0
    # How often the service checks its database and broker: while either is away its health
    # answers NOT_SERVING (so Kubernetes stops routing to it), and SERVING once both are back.
    dependency_check_seconds: float = 5.0
    # A plaintext port answering grpc.health.v1 only (0: none), for the kubelet's probes, which
    # cannot present a client certificate to a port that requires one.
    grpc_health_port: int = 0
    grpc_grace_seconds: float = 10.0
    service_client_id: str = ""
    service_client_secret: str = ""
    log_level: str = "INFO"
    # "none", "console" or "otlp" (OTLP needs the exporter package installed).
    otel_exporter: str = "none"
    outbox_batch_size: int = 500
    outbox_poll_seconds: float = 1.0
    # How long a consumer's batch that came back short is given to fill before it is handled
    # (toex_common.events.consumer): the most it adds to an event's way through a service, for
    # far fewer transactions when events trickle in. 0: handle what came at once.
    consumer_linger_seconds: float = 0.2
