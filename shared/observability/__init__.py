"""Observability kit: correlation ids, JSON logs, Prometheus metrics, OpenTelemetry tracing."""

from shared.observability.correlation import (
    CORRELATION_HEADER,
    CorrelationIdMiddleware,
    bind_correlation_id,
    correlation_id_var,
    correlation_scope,
    get_correlation_id,
    new_correlation_id,
    reset_correlation_id,
)
from shared.observability.logging import configure_logging, get_logger
from shared.observability.metrics import (
    REGISTRY,
    MetricsMiddleware,
    counter,
    gauge,
    histogram,
    metrics_response,
    mount_metrics,
)
from shared.observability.tracing import build_tracer_provider, configure_tracing, shutdown_tracing

__all__ = [
    "CORRELATION_HEADER",
    "REGISTRY",
    "CorrelationIdMiddleware",
    "MetricsMiddleware",
    "bind_correlation_id",
    "build_tracer_provider",
    "configure_logging",
    "configure_tracing",
    "correlation_id_var",
    "correlation_scope",
    "counter",
    "gauge",
    "get_correlation_id",
    "get_logger",
    "histogram",
    "metrics_response",
    "mount_metrics",
    "new_correlation_id",
    "reset_correlation_id",
    "shutdown_tracing",
]
