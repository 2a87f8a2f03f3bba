"""Prometheus metrics: HTTP RED metrics per route template, idempotent domain-metric helpers, /metrics.

Registry decision: every service is its own process, so metrics live on prometheus_client's default
`REGISTRY`, which already carries the process_*, python_info and python_gc_* collectors. Services
register domain metrics there through `counter`/`histogram`/`gauge`, which return the existing collector
when a module is imported twice (tests, reloads) instead of raising "Duplicated timeseries".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount
from starlette.types import ASGIApp, Message, Receive, Scope, Send

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "HTTP_DURATION_BUCKETS_S",
    "REGISTRY",
    "UNMATCHED_ROUTE",
    "MetricsMiddleware",
    "Refresher",
    "counter",
    "gauge",
    "histogram",
    "metrics_response",
    "mount_metrics",
]

UNMATCHED_ROUTE = "<unmatched>"
# 1 ms .. 5 s: the range between a cached read and a slow venue round trip.
HTTP_DURATION_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

_C = TypeVar("_C", Counter, Gauge, Histogram)


def _existing(kind: type[_C], name: str, labelnames: Sequence[str], registry: CollectorRegistry) -> _C | None:
    # prometheus_client has no public lookup by name; _names_to_collectors is its registry index.
    collector = registry._names_to_collectors.get(name)
    if collector is None:
        return None
    if not isinstance(collector, kind) or tuple(collector._labelnames) != tuple(labelnames):
        raise ValueError(f"metric {name!r} is already registered with another type or label names")
    return collector


def counter(
    name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: CollectorRegistry = REGISTRY
) -> Counter:
    """Return the counter `name`, creating it on first call."""
    found = _existing(Counter, name, labelnames, registry)
    return found if found is not None else Counter(name, documentation, labelnames, registry=registry)


def gauge(
    name: str, documentation: str, labelnames: Sequence[str] = (), *, registry: CollectorRegistry = REGISTRY
) -> Gauge:
    """Return the gauge `name`, creating it on first call."""
    found = _existing(Gauge, name, labelnames, registry)
    return found if found is not None else Gauge(name, documentation, labelnames, registry=registry)


def histogram(
    name: str,
    documentation: str,
    labelnames: Sequence[str] = (),
    *,
    buckets: Sequence[float] = HTTP_DURATION_BUCKETS_S,
    registry: CollectorRegistry = REGISTRY,
) -> Histogram:
    """Return the histogram `name`, creating it on first call."""
    found = _existing(Histogram, name, labelnames, registry)
    if found is not None:
        return found
    return Histogram(name, documentation, labelnames, buckets=buckets, registry=registry)


HTTP_REQUESTS = counter(
    "http_requests_total",
    "HTTP requests handled, by route template and status.",
    ("service", "method", "route", "status"),
)
HTTP_DURATION = histogram(
    "http_request_duration_seconds",
    "HTTP request latency in seconds, by route template.",
    ("service", "method", "route"),
)
HTTP_IN_PROGRESS = gauge("http_requests_in_progress", "HTTP requests being handled now.", ("service", "method"))


def route_template(scope: Scope, root_path_before: str) -> str:
    """Return the matched route's path template (mount prefix included), or "<unmatched>"."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED_ROUTE
    if isinstance(route, Mount):
        return path
    # A mounted sub-application extends root_path by the mount prefix before its own router matches.
    root_path: str = scope.get("root_path", "")
    return root_path[len(root_path_before) :] + path


class MetricsMiddleware:
    """Pure ASGI middleware recording request count, latency and in-flight requests per route template."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        # Labelled children cached per label tuple: labels() validates and locks on every call.
        self._in_progress: dict[str, Gauge] = {}
        self._finished: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def _finished_children(self, method: str, route: str, status: int) -> tuple[Counter, Histogram]:
        key = (method, route, status)
        children = self._finished.get(key)
        if children is None:
            children = (
                HTTP_REQUESTS.labels(self.service, method, route, str(status)),
                HTTP_DURATION.labels(self.service, method, route),
            )
            self._finished[key] = children
        return children

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"] if scope["method"] in _KNOWN_METHODS else "OTHER"
        root_path_before = scope.get("root_path", "")
        status = 500

        async def send_capturing_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        in_progress = self._in_progress.get(method)
        if in_progress is None:
            in_progress = self._in_progress[method] = HTTP_IN_PROGRESS.labels(self.service, method)
        in_progress.inc()
        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_capturing_status)
        finally:
            elapsed_s = time.perf_counter() - started
            in_progress.dec()
            requests, duration = self._finished_children(method, route_template(scope, root_path_before), status)
            requests.inc()
            duration.observe(elapsed_s)


def metrics_response(accept: str | None = None, *, registry: CollectorRegistry = REGISTRY) -> Response:
    """Render `registry` in the Prometheus text format (OpenMetrics when `accept` asks for it)."""
    encoder, content_type = choose_encoder(accept or "")
    return Response(content=encoder(registry), media_type=content_type)


def mount_metrics(app: FastAPI, *, path: str = "/metrics", registry: CollectorRegistry = REGISTRY) -> None:
    """Serve `registry` on GET `path` (left out of the OpenAPI schema, no auth)."""

    def metrics(request: Request) -> Response:
        return metrics_response(request.headers.get("accept"), registry=registry)

    app.add_api_route(path, metrics, methods=["GET"], include_in_schema=False)


class Refresher:
    """Runs `refresh` (gauges counted from storage) at start, on each `wake()` and every `interval_s`."""

    def __init__(self, refresh: Callable[[], Awaitable[None]], interval_s: float) -> None:
        self._refresh = refresh
        self._interval_s = interval_s
        self._changed = asyncio.Event()

    def wake(self) -> None:
        """Something committed: refresh now."""
        self._changed.set()

    async def run(self, stop_event: asyncio.Event) -> None:
        """Refresh until `stop_event` is set."""
        while not stop_event.is_set():
            self._changed.clear()
            await self._refresh()
            waits = {asyncio.ensure_future(self._changed.wait()), asyncio.ensure_future(stop_event.wait())}
            _, pending = await asyncio.wait(waits, timeout=self._interval_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                waiter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waiter
