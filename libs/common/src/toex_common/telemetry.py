"""OpenTelemetry setup and W3C trace-context propagation through gRPC metadata and NATS headers."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased

_configured = False


def configure_tracing(service: str, exporter: str = "none") -> None:
    """Install a tracer provider once per process.

    With exporter "none" every call still gets a span context (trace and span ids, continuing
    the caller's trace), so trace ids reach logs and events' `traceparent`, but spans are not
    recorded: recording spans that go nowhere cost a tenth of a call's time. With an exporter,
    every span is recorded, or sampled as the caller's trace was (parent-based)."""
    global _configured
    if _configured:
        return
    sampler = ALWAYS_OFF if exporter == "none" else ParentBased(ALWAYS_ON)
    provider = TracerProvider(resource=Resource.create({"service.name": service}), sampler=sampler)
    if exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter,
        )

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _configured = True


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def inject(carrier: MutableMapping[str, str]) -> None:
    """Write traceparent/tracestate of the current span into headers."""
    propagate.inject(carrier)


def extract(carrier: Mapping[str, str]) -> otel_context.Context:
    return propagate.extract(carrier)
