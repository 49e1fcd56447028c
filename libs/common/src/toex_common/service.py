"""What every service process is built from, so each service's bootstrap says only what is its own.

`Platform.start(settings, streams=...)` connects what every service holds: the database engine,
NATS with the service's streams declared, the audit writer and the token verifier.
`platform.grpc_server(...)` builds the gRPC server with the standard interceptor chain for the
service's method rules. `ServiceApp` runs the service: the outbox relay and event consumers in the
background (a subclass adds its own work in `background()`), then, on shutdown, stops them, writes
what the audit log still holds, closes what the service opened (`close()`), drains NATS and
closes the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from grpc import aio
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from nats.aio.client import Client
from nats.js import JetStreamContext
from sqlalchemy.ext.asyncio import AsyncEngine
from toex_kernel.installation import Installation, InstallationError, InstallationKind, Served
from toex_kernel.policy import MethodPolicy, MethodRule

from toex_common.audit import PostgresAuditLog
from toex_common.audit_anchor import AUDIT_STREAM, anchor_subject, publish_anchor
from toex_common.auth import TokenVerifier
from toex_common.config import ServiceSettings
from toex_common.db import create_engine
from toex_common.events.consumer import IdempotentConsumer
from toex_common.events.nats import connect
from toex_common.events.outbox import OutboxRelay, outbox_backlog
from toex_common.events.streams import StreamSpec, ensure_stream
from toex_common.grpc.interceptors import DatabaseState, standard_interceptors
from toex_common.grpc.server import create_health_server, create_server, serve_until_signal
from toex_common.installation import (
    bind_publisher,
    installation_of,
    publishable_subjects,
    request_gates,
    scoped_subjects,
)
from toex_common.telemetry import OutboxGauges
from toex_common.tls import nats_context, server_credentials

log = logging.getLogger(__name__)

Background = tuple[str, Coroutine[Any, Any, None]]
# A bound gRPC server, its port and its health servicer, as Platform.grpc_server returns them.
GrpcServer = tuple[aio.Server, int, HealthServicer]


@dataclass
class Platform:
    settings: ServiceSettings
    engine: AsyncEngine
    nc: Client
    js: JetStreamContext
    audit: PostgresAuditLog
    verifier: TokenVerifier
    # What the installation serves (TOEX_INSTALLATION, TOEX_REGION): toex_common.installation.
    installation: Installation = field(default_factory=Installation.single)
    # Whether the dependency check last found the database away: the interceptor chain then
    # refuses calls at once (ServiceApp's check keeps it).
    database: DatabaseState = field(default_factory=DatabaseState)

    @classmethod
    async def start(cls, settings: ServiceSettings, *, streams: Sequence[StreamSpec]) -> Platform:
        """Connect to PostgreSQL and NATS, declare `streams` (the service's own, and those it
        consumes, declared exactly as their owners do, so it can start before them) and start
        the audit writer. Settings that describe no installation refuse to start
        (InstallationError, before anything connects)."""
        installation = installation_of(settings)
        engine = create_engine(settings.database_url)
        bind_publisher(engine, installation)
        nc = await connect(settings.nats_url, f"toex-{settings.service_name}", tls=nats_context(settings))
        js = nc.jetstream()
        for stream in (*streams, AUDIT_STREAM):
            await ensure_stream(js, stream)
        audit = PostgresAuditLog(engine)
        verifier = TokenVerifier(settings.oidc_issuer, settings.oidc_audience, settings.oidc_algorithms)
        return cls(settings, engine, nc, js, audit, verifier, installation=installation)

    async def grpc_server(
        self,
        *,
        register: Callable[[aio.Server], None],
        service_names: Sequence[str],
        rules: Mapping[str, MethodRule],
        served: Mapping[str, Served] | None = None,
        options: Sequence[tuple[str, Any]] = (),
    ) -> GrpcServer:
        """The gRPC server (bound, not started) with the standard interceptor chain and a policy
        of `rules`. `served` says, for every method of `rules`, where its request names the
        region of what it reaches: each call is checked against the installation
        (toex_common.installation.request_gates). Only a service that answers for every region
        wherever it runs leaves it out (its calls are not checked)."""
        gates = request_gates(self.installation, served, rules) if served is not None else {}
        return await create_server(
            register=register,
            service_names=service_names,
            interceptors=standard_interceptors(
                service=self.settings.service_name,
                verifier=self.verifier,
                policy=MethodPolicy(rules),
                audit=self.audit,
                database=self.database,
            ),
            host=self.settings.grpc_host,
            port=self.settings.grpc_port,
            credentials=server_credentials(self.settings),
            options=options,
            gates=gates,
        )

    def outbox_relay(self) -> OutboxRelay:
        return OutboxRelay(
            self.engine,
            self.js,
            batch_size=self.settings.outbox_batch_size,
            poll_seconds=self.settings.outbox_poll_seconds,
            subjects=publishable_subjects(self.installation),
        )

    def consumer(
        self,
        *,
        subjects: Sequence[str],
        every_region: bool = False,
        consumer_class: type[IdempotentConsumer] = IdempotentConsumer,
        **config: Any,
    ) -> IdempotentConsumer:
        """An idempotent consumer on this service's NATS connection (see IdempotentConsumer),
        reading `subjects` of the regions the installation serves only: `toex.*.<domain>...`
        becomes `toex.london.<domain>...` at LONDON's installation and `toex.national...` at
        the hub (whose streams source every region's). With `every_region`, a read model of
        every region (the hub's national oversight) reads them as given; a region installation
        holds only its own region's events, and refuses to. `consumer_class`: a subclass that
        handles its batches its own way (oversight's DirectReporter)."""
        config.setdefault("linger_seconds", self.settings.consumer_linger_seconds)
        if every_region:
            if self.installation.kind is InstallationKind.REGION:
                raise InstallationError(
                    f"consumer {config.get('name', '')} reads every region's events; the "
                    f"{self.installation.name} installation holds its own region's only"
                )
            return consumer_class(nc=self.nc, js=self.js, subjects=subjects, **config)
        return consumer_class(
            nc=self.nc, js=self.js, subjects=scoped_subjects(self.installation, subjects), **config
        )


class ServiceApp:
    """A running service. Tests and `serve` use `server`, `port`, `health`, `engine`, `deps`,
    `start_background()` and `shutdown()`."""

    # How long shutdown waits for a piece of background work to finish what it is doing.
    shutdown_wait_seconds = 10.0
    # How long a consumer whose run failed (its stream not there yet, say) waits to try again.
    consumer_retry_seconds = 2.0

    def __init__(
        self,
        platform: Platform,
        deps: Any,
        server: GrpcServer,
        *,
        service_names: Sequence[str],
        consumers: Iterable[IdempotentConsumer] = (),
    ) -> None:
        self.platform = platform
        self.settings = platform.settings
        self.engine = platform.engine
        self.nc = platform.nc
        self.audit = platform.audit
        self.deps = deps
        self.server, self.port, self.health = server
        # The plaintext health-only port (TOEX_GRPC_HEALTH_PORT), once background work starts.
        self.health_server: aio.Server | None = None
        self.health_port = 0
        self.service_names = list(service_names)
        self.relay = platform.outbox_relay()
        self.consumers = list(consumers)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        # Whether the last dependency check found the database or the broker away.
        self.dependencies_down = False
        # Dependency checks in a row whose database query did not answer in time.
        self.database_timeouts = 0
        # The outbox's backlog as gauges, recorded by each dependency check.
        self.outbox_gauges = OutboxGauges()

    def background(self) -> list[Background]:
        """(name, coroutine) of the work that runs beside the server. Subclasses add theirs to
        what this returns."""
        return [
            ("outbox-relay", self.relay.run(self.stop)),
            (
                "jwks-refresh",
                self._after_first(
                    self.settings.jwks_refresh_seconds,
                    self.platform.verifier.refresh_keys,
                    "refreshing the identity provider's signing keys",
                ),
            ),
            (
                "audit-anchor",
                self.every(self.settings.audit_anchor_seconds, self._anchor_audit, "anchoring the audit log"),
            ),
            (
                "dependency-check",
                self.every(
                    self._dependency_check_period,
                    self._check_dependencies,
                    "checking the database and the broker",
                ),
            ),
            *((consumer.name, self._consume(consumer)) for consumer in self.consumers),
        ]

    def _dependency_check_period(self) -> float:
        """TOEX_DEPENDENCY_CHECK_SECONDS; at most a second while something is away, so calls
        refused meanwhile are let through again soon after the database is back."""
        seconds = self.settings.dependency_check_seconds
        return min(seconds, 1.0) if self.dependencies_down or self.database_timeouts else seconds

    async def _check_dependencies(self) -> None:
        """NOT_SERVING while the database or the broker is away, SERVING again once both are
        back. Nothing else touches the status: serving and draining set it as before (and a
        draining server's health ignores this). While the database is away, calls are refused
        at once (`Platform.database`), not left waiting on it."""
        problems = []
        try:
            async with asyncio.timeout(max(1.0, min(self.settings.dependency_check_seconds, 5.0))):
                waiting, oldest = await outbox_backlog(self.engine)
                self.outbox_gauges.backlog, self.outbox_gauges.oldest_age = waiting, oldest
            self.database_timeouts = 0
        except TimeoutError:
            # A check that merely ran late (this process's event loop busy with a long piece of
            # work) looks like a database that does not answer. One such check only brings the
            # next one forward; two in a row say the database is away.
            self.database_timeouts += 1
            if self.database_timeouts > 1:
                problems.append("database: no answer within the check's timeout, twice")
        except Exception as exc:
            self.database_timeouts = 0
            problems.append(f"database: {exc!r}")
        self.platform.database.away = bool(problems)
        if not self.nc.is_connected:
            problems.append("broker: not connected")
        if problems and not self.dependencies_down:
            log.warning("not serving until they are back: %s", "; ".join(problems))
            status = health_pb2.HealthCheckResponse.NOT_SERVING
        elif not problems and self.dependencies_down:
            log.info("database and broker back: serving")
            status = health_pb2.HealthCheckResponse.SERVING
        else:
            return
        self.dependencies_down = bool(problems)
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    async def _anchor_audit(self) -> None:
        subject = anchor_subject(self.settings.region, self.settings.service_name)
        await publish_anchor(self.engine, self.platform.js, subject)

    async def _after_first(self, seconds: float, work: Callable[[], Awaitable[object]], what: str) -> None:
        """`every(seconds, work)`, starting one period from now (the first use fetched it)."""
        await self.pause(seconds)
        await self.every(seconds, work, what)

    async def start_background(self) -> None:
        if self.settings.grpc_health_port and self.health_server is None:
            self.health_server, self.health_port = create_health_server(
                self.health, host=self.settings.grpc_host, port=self.settings.grpc_health_port
            )
            await self.health_server.start()
        # Each consumer declares the stream it reads and its durable consumer before the service
        # says it is up, so an event published from then on is kept for it even if the producer
        # has never started. A broker away now is not fatal: the consumer's run does it later.
        for consumer in self.consumers:
            try:
                await asyncio.wait_for(consumer.setup(), timeout=10)
            except Exception as exc:
                log.warning("consumer %s not set up yet (%r); its run will try again", consumer.name, exc)
        self.tasks = [asyncio.create_task(work, name=name) for name, work in self.background()]

    async def _consume(self, consumer: IdempotentConsumer) -> None:
        """Keep consuming: a run that fails (the stream not there yet, the broker away) is
        started again."""
        while not self.stop.is_set():
            try:
                await consumer.run(self.stop)
            except Exception as exc:
                log.warning("consumer %s stopped (%r); starting it again", consumer.name, exc)
                await self.pause(self.consumer_retry_seconds)

    async def every(
        self, seconds: float | Callable[[], float], work: Callable[[], Awaitable[object]], what: str
    ) -> None:
        """Run `work` now and then every `seconds` (or `seconds()`, asked after each run) until
        shutdown; a failed run is logged, and the next goes ahead."""
        while not self.stop.is_set():
            try:
                await work()
            except Exception:
                log.exception("%s failed", what)
            await self.pause(seconds() if callable(seconds) else seconds)

    async def pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if shutdown begins."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    async def close(self) -> None:
        """Close what the service itself opened (clients of other systems). Called by shutdown."""

    async def shutdown(self) -> None:
        """Stop background work (each finishes what it is doing), write what the audit log
        holds, close the service's own clients, drain NATS, close the pool."""
        self.stop.set()
        for task in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, self.shutdown_wait_seconds)
        await self.audit.stop()
        if self.health_server is not None:
            await self.health_server.stop(0)
        await self.close()
        with contextlib.suppress(Exception):
            await self.nc.drain()
        await self.engine.dispose()

    async def serve(self, listening: str) -> None:
        """Start the background work and serve until SIGTERM/SIGINT, then shut down."""
        await self.start_background()
        log.info("%s", listening)
        await serve_until_signal(
            self.server,
            self.health,
            service_names=self.service_names,
            grace_seconds=self.settings.grpc_grace_seconds,
            on_stop=self.shutdown,
        )
