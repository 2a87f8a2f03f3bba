"""OpenTelemetry tracing over OTLP/HTTP, switched on only by OTEL_EXPORTER_OTLP_ENDPOINT.

Global state: OpenTelemetry lets a process set its global tracer provider once. `configure_tracing`
without `tracer_provider` installs one global provider (or reuses an SDK provider already installed);
tests pass their own `tracer_provider` (see `build_tracer_provider`) so nothing global is set, and call
`shutdown_tracing()` afterwards to flush it and undo every instrumentation this module applied.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace

if TYPE_CHECKING:
    # The SDK and instrumentations are imported when tracing is switched on, keeping plain imports cheap.
    from fastapi import FastAPI
    from opentelemetry.sdk.trace import TracerProvider
    from sqlalchemy.ext.asyncio import AsyncEngine

ENDPOINT_ENV = "OTEL_EXPORTER_OTLP_ENDPOINT"
_FASTAPI_EXCLUDED_ENV = "OTEL_PYTHON_FASTAPI_EXCLUDED_URLS"
# Probes and scrapes would otherwise produce a trace every few seconds per pod.
_DEFAULT_EXCLUDED_URLS = "/metrics$,/healthz$,/readyz$"


@dataclass
class _TracingState:
    provider: TracerProvider | None = None
    apps: list[FastAPI] = field(default_factory=list)
    instrumentors: list[Any] = field(default_factory=list)


_state = _TracingState()


def tracing_enabled() -> bool:
    """Return True when OTEL_EXPORTER_OTLP_ENDPOINT is set to a non-empty value."""
    return bool(os.environ.get(ENDPOINT_ENV, "").strip())


def build_tracer_provider(service: str) -> TracerProvider:
    """Return a TracerProvider for `service` exporting in batches over OTLP/HTTP (endpoint from the env)."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service}))
    # With no endpoint argument the exporter reads OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT and appends /v1/traces.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


def configure_tracing(
    service: str,
    *,
    app: FastAPI | None = None,
    engine: AsyncEngine | None = None,
    instrument_httpx: bool = True,
    instrument_redis: bool = True,
    tracer_provider: TracerProvider | None = None,
) -> bool:
    """Export traces over OTLP and instrument FastAPI/SQLAlchemy/httpx/redis when the endpoint is set; else no-op."""
    if not tracing_enabled():
        return False
    provider = tracer_provider if tracer_provider is not None else _global_provider(service)
    _state.provider = provider
    if app is not None:
        _instrument_fastapi(app, provider)
    if engine is not None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        # A second engine in the same process is already covered: the first call wraps create_engine globally.
        # skip_dep_check: the instrumentation declares sqlalchemy < 2.1 but works on 2.1 (tested against PostgreSQL).
        _instrument(SQLAlchemyInstrumentor(), provider, engine=engine.sync_engine, skip_dep_check=True)
    if instrument_httpx:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        _instrument(HTTPXClientInstrumentor(), provider)
    if instrument_redis:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        _instrument(RedisInstrumentor(), provider)
    return True


def shutdown_tracing() -> None:
    """Flush and shut down the provider in use and undo the instrumentation applied by configure_tracing."""
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    for app in _state.apps:
        FastAPIInstrumentor.uninstrument_app(app)
    for instrumentor in _state.instrumentors:
        instrumentor.uninstrument()
    if _state.provider is not None:
        _state.provider.shutdown()
    _state.apps.clear()
    _state.instrumentors.clear()
    _state.provider = None


def add_trace_context(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Structlog processor: add trace_id and span_id of the current span, when there is a valid one."""
    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", trace.format_trace_id(context.trace_id))
        event_dict.setdefault("span_id", trace.format_span_id(context.span_id))
    return event_dict


def _global_provider(service: str) -> TracerProvider:
    from opentelemetry.sdk.trace import TracerProvider

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        # Set earlier in this process (set_tracer_provider works once), by us or by opentelemetry-instrument.
        return current
    provider = build_tracer_provider(service)
    trace.set_tracer_provider(provider)
    return provider


def _instrument_fastapi(app: FastAPI, provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    excluded = None if os.environ.get(_FASTAPI_EXCLUDED_ENV) else _DEFAULT_EXCLUDED_URLS
    FastAPIInstrumentor.instrument_app(
        app, tracer_provider=provider, excluded_urls=excluded, exclude_spans=["receive", "send"]
    )
    _state.apps.append(app)


def _instrument(instrumentor: Any, provider: TracerProvider, **kwargs: Any) -> None:
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    instrumentor.instrument(tracer_provider=provider, **kwargs)
    if instrumentor.is_instrumented_by_opentelemetry:  # False when its dependency check refused
        _state.instrumentors.append(instrumentor)
