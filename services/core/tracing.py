"""OpenTelemetry hooks: a tracer provider when tracing is on, the API's no-op otherwise.

When on, FastAPI's native telemetry gives every HTTP request a server span named by route
template (continuing the caller's W3C ``traceparent``) — :func:`fastapi_telemetry` hands it
the service's provider — outgoing calls through :mod:`services.core.http` carry the context on, and
events carry it in their envelope, so one checkout is one trace across services. Log lines
pick up the trace and span ids from the active span.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterable, Mapping, MutableMapping
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Tracer

from services.core.logging import QUIET_PATHS, want_trace_fields
from services.core.settings import ServiceSettings

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

log = logging.getLogger(__name__)
_global_provider_set = False


def setup_tracing(
    settings: ServiceSettings, extra_processors: Iterable[SpanProcessor] = ()
) -> TracerProvider | None:
    """The service's tracer provider, or None when tracing is off.

    The first provider made in a process also becomes the global one, so libraries that
    trace through the global API report to it too.
    """
    global _global_provider_set
    if not settings.otel_enabled:
        return None
    want_trace_fields()
    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": settings.service_name, "service.version": settings.version}
        )
    )
    if settings.otel_exporter == "console":
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    elif settings.otel_exporter == "otlp":
        provider.add_span_processor(BatchSpanProcessor(_otlp_exporter(settings.otel_endpoint)))
    for processor in extra_processors:
        provider.add_span_processor(processor)
    if not _global_provider_set:
        trace.set_tracer_provider(provider)
        _global_provider_set = True
    return provider


def _otlp_exporter(endpoint: str | None) -> SpanExporter:
    # Imported by name: the package is optional, so its types may not be there to check.
    try:
        module = importlib.import_module("opentelemetry.exporter.otlp.proto.http.trace_exporter")
    except ImportError as exc:  # pragma: no cover - depends on an optional package
        raise RuntimeError(
            "KOMMERCE_OTEL_EXPORTER=otlp needs the opentelemetry-exporter-otlp-proto-http "
            "package installed"
        ) from exc
    exporter: SpanExporter = (module.OTLPSpanExporter(endpoint=endpoint) if endpoint
                              else module.OTLPSpanExporter())
    return exporter


def fastapi_telemetry(provider: TracerProvider | None) -> TelemetryConfig:
    """``FastAPI(telemetry=...)``: spans to ``provider``, or none at all when tracing is off
    (even if another app in the process set a global provider). Metrics and logs stay with
    Prometheus and our JSON logging."""
    if provider is None:
        return {"tracing": False, "metrics": False, "logs": False}
    return {"tracer_provider": provider, "metrics": False, "logs": False,
            "exclude": lambda scope: scope.get("path") in QUIET_PATHS}


def tracer_for(provider: TracerProvider | None, name: str = "kommerce") -> Tracer:
    """A real tracer from ``provider``, or the no-op tracer when tracing is off."""
    if provider is None:
        return trace.NoOpTracer()
    return provider.get_tracer(name)


def inject_context(carrier: MutableMapping[str, str]) -> MutableMapping[str, str]:
    """Write the current trace context (``traceparent``) into headers or an envelope."""
    propagate.inject(carrier)
    return carrier


def extract_context(carrier: Mapping[str, str]) -> otel_context.Context:
    return propagate.extract(carrier)
