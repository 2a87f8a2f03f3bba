"""Correlation ids, JSON logs, Prometheus metrics and OTLP tracing of shared.observability."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from starlette.types import Message

from shared.observability import (
    CORRELATION_HEADER,
    CorrelationIdMiddleware,
    MetricsMiddleware,
    build_tracer_provider,
    configure_logging,
    configure_tracing,
    correlation_scope,
    counter,
    gauge,
    get_correlation_id,
    get_logger,
    histogram,
    mount_metrics,
    shutdown_tracing,
)
from shared.observability.logging import ROUTED_LOGGERS

HEX_ID = re.compile(r"[0-9a-f]{32}")


# --- fixtures and helpers ---------------------------------------------------------------------------------------


class LogCapture:
    """The stream configure_logging writes to, read back as parsed JSON lines."""

    def __init__(self) -> None:
        self.stream = io.StringIO()

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def events(self, event: str) -> list[dict[str, Any]]:
        return [line for line in self.lines() if line["event"] == event]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    """Configure JSON logging into a buffer; restore the logging set-up afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_routed = {
        name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate) for name in ROUTED_LOGGERS
    }
    capture = LogCapture()
    configure_logging("obs-test", stream=capture.stream)
    yield capture
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, (handlers, propagate) in saved_routed.items():
        logging.getLogger(name).handlers[:] = handlers
        logging.getLogger(name).propagate = propagate
    structlog.reset_defaults()


def make_app(service: str) -> FastAPI:
    app = FastAPI()
    log = get_logger("tests.observability")

    @app.get("/items/{item_id}")
    async def read_item(item_id: int) -> dict[str, Any]:
        log.info("item read", item_id=item_id)
        return {"item_id": item_id, "correlation_id": get_correlation_id()}

    @app.get("/sync")
    def read_sync() -> dict[str, str | None]:
        return {"correlation_id": get_correlation_id()}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    sub = FastAPI()

    @sub.get("/things/{thing_id}")
    async def read_thing(thing_id: str) -> dict[str, str]:
        return {"thing_id": thing_id}

    app.mount("/sub", sub)
    mount_metrics(app)
    app.add_middleware(MetricsMiddleware, service=service)
    app.add_middleware(CorrelationIdMiddleware)
    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=make_app("obs-client"))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        yield http


async def call_raw(app: FastAPI, headers: list[tuple[bytes, bytes]], path: str = "/sync") -> tuple[Message, bytes]:
    """Call the ASGI app directly, so headers httpx would refuse (newlines, 8-bit bytes) reach the middleware."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"test"), *headers],
        "client": ("127.0.0.1", 1234),
        "server": ("test", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start, body


def header_values(start: Message, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in start["headers"] if k.lower() == name]


# --- correlation ids ----------------------------------------------------------------------------------------------


async def test_valid_correlation_id_is_echoed_and_visible_in_route(client: httpx.AsyncClient) -> None:
    cid = "req-42.a:b_C"
    response = await client.get("/items/7", headers={CORRELATION_HEADER: cid})
    assert response.status_code == 200
    assert response.headers[CORRELATION_HEADER] == cid
    assert response.json()["correlation_id"] == cid


async def test_correlation_id_reaches_sync_routes_in_the_threadpool(client: httpx.AsyncClient) -> None:
    response = await client.get("/sync", headers={CORRELATION_HEADER: "sync-1"})
    assert response.json()["correlation_id"] == "sync-1"


async def test_missing_correlation_id_is_created_per_request(client: httpx.AsyncClient) -> None:
    first = await client.get("/items/1")
    second = await client.get("/items/1")
    first_id = first.headers[CORRELATION_HEADER]
    assert HEX_ID.fullmatch(first_id)
    assert first.json()["correlation_id"] == first_id
    assert second.headers[CORRELATION_HEADER] != first_id
    assert get_correlation_id() is None  # the request's binding does not leak into the caller's context


@pytest.mark.parametrize(
    "bad",
    [b"x" * 300, b"x" * 129, b"abc\ndef", b"abc\r\nSet-Cookie: a=b", b"", b"has space", b"caf\xe9", b"a/b"],
)
async def test_invalid_correlation_id_is_replaced(bad: bytes) -> None:
    start, body = await call_raw(make_app("obs-raw"), [(b"x-correlation-id", bad)])
    [echoed] = header_values(start, b"x-correlation-id")
    assert echoed != bad.decode("latin-1")
    assert HEX_ID.fullmatch(echoed)
    assert json.loads(body)["correlation_id"] == echoed


async def test_correlation_id_of_128_chars_is_accepted() -> None:
    cid = "a" * 128
    start, _ = await call_raw(make_app("obs-raw"), [(b"x-correlation-id", cid.encode())])
    assert header_values(start, b"x-correlation-id") == [cid]


def test_correlation_scope_binds_and_restores() -> None:
    assert get_correlation_id() is None
    with correlation_scope("outer") as outer:
        assert outer == "outer"
        with correlation_scope() as inner:
            assert HEX_ID.fullmatch(inner)
            assert get_correlation_id() == inner
        assert get_correlation_id() == "outer"
    assert get_correlation_id() is None


# --- logging ------------------------------------------------------------------------------------------------------


def test_log_lines_are_json_with_service_correlation_and_redaction(logs: LogCapture) -> None:
    log = get_logger("tests.logging")
    with correlation_scope("corr-1"):
        log.info(
            "login attempt",
            user="ada",
            password="hunter2",
            headers={"Authorization": "Bearer abc", "x-api-key": "k1", "accept": "json"},
            items=[{"refresh_token": "r1", "n": 1}],
        )
    [line] = logs.events("login attempt")
    assert line["service"] == "obs-test"
    assert line["correlation_id"] == "corr-1"
    assert line["level"] == "info"
    assert line["logger"] == "tests.logging"
    assert datetime.fromisoformat(line["timestamp"]).utcoffset() == UTC.utcoffset(None)
    assert line["user"] == "ada"
    assert line["password"] == "[REDACTED]"
    assert line["headers"] == {"Authorization": "[REDACTED]", "x-api-key": "[REDACTED]", "accept": "json"}
    assert line["items"] == [{"refresh_token": "[REDACTED]", "n": 1}]
    assert "hunter2" not in logs.stream.getvalue()


def test_stdlib_library_logs_become_json(logs: LogCapture) -> None:
    # uvicorn installs its own non-propagating handlers; configure_logging routes them to the JSON handler.
    logging.getLogger("uvicorn.error").addHandler(logging.StreamHandler(io.StringIO()))
    configure_logging("obs-test", stream=logs.stream)
    with correlation_scope("corr-2"):
        logging.getLogger("uvicorn.error").warning("started %s", "server", extra={"api_key": "k", "port": 8000})
        try:
            raise ValueError("bad")
        except ValueError:
            logging.getLogger("aiokafka.consumer").exception("consumer failed")
    [started] = logs.events("started server")
    assert started["logger"] == "uvicorn.error"
    assert started["level"] == "warning"
    assert started["correlation_id"] == "corr-2"
    assert started["service"] == "obs-test"
    assert started["api_key"] == "[REDACTED]"
    assert started["port"] == 8000
    [failed] = logs.events("consumer failed")
    assert "ValueError: bad" in failed["exception"]


def test_configure_logging_twice_keeps_one_handler_and_filters_level(logs: LogCapture) -> None:
    configure_logging("obs-second", level="warning", stream=logs.stream)
    log = get_logger("tests.twice")
    log.info("quiet")
    log.warning("loud")
    assert logs.events("quiet") == []
    [loud] = logs.events("loud")
    assert loud["service"] == "obs-second"
    assert loud["correlation_id"] is None


def test_configure_logging_rejects_unknown_level(logs: LogCapture) -> None:
    with pytest.raises(ValueError, match="unknown log level"):
        configure_logging("obs-test", level="chatty", stream=logs.stream)


async def test_request_logs_carry_the_request_correlation_id(logs: LogCapture, client: httpx.AsyncClient) -> None:
    await client.get("/items/5", headers={CORRELATION_HEADER: "req-log-1"})
    [line] = logs.events("item read")
    assert line["correlation_id"] == "req-log-1"
    assert line["item_id"] == 5
    assert "trace_id" not in line  # tracing is off


# --- metrics ------------------------------------------------------------------------------------------------------


def sample_value(text: str, name: str, labels: dict[str, str]) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


async def test_metrics_count_requests_by_route_template() -> None:
    service = f"obs-metrics-{uuid.uuid4().hex[:8]}"
    app = make_app(service)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.get("/items/2")).status_code == 200
        assert (await http.get("/no/such/path")).status_code == 404
        assert (await http.get("/sub/things/abc")).status_code == 200
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    items = {"service": service, "method": "GET", "route": "/items/{item_id}"}
    assert sample_value(text, "http_requests_total", {**items, "status": "200"}) == 2.0
    assert sample_value(text, "http_request_duration_seconds_count", items) == 2.0
    assert sample_value(text, "http_request_duration_seconds_bucket", {**items, "le": "5.0"}) == 2.0
    unmatched = {"service": service, "route": "<unmatched>", "status": "404"}
    assert sample_value(text, "http_requests_total", unmatched) == 1.0
    assert sample_value(text, "http_requests_total", {"service": service, "route": "/sub/things/{thing_id}"}) == 1.0
    assert sample_value(text, "http_requests_total", {"service": service, "route": "/items/1"}) is None
    # only the /metrics scrape itself is in flight while it renders
    assert sample_value(text, "http_requests_in_progress", {"service": service, "method": "GET"}) == 1.0
    # the default registry brings the process and platform collectors along
    assert sample_value(text, "process_cpu_seconds_total", {}) is not None
    assert sample_value(text, "python_info", {}) == 1.0
    assert "/metrics" not in app.openapi()["paths"]


async def test_metrics_count_unhandled_errors_as_500() -> None:
    service = f"obs-errors-{uuid.uuid4().hex[:8]}"
    app = make_app(service)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        assert (await http.get("/boom")).status_code == 500
        text = (await http.get("/metrics")).text
    labels = {"service": service, "route": "/boom", "status": "500"}
    assert sample_value(text, "http_requests_total", labels) == 1.0


async def test_metrics_endpoint_speaks_openmetrics_when_asked(client: httpx.AsyncClient) -> None:
    response = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.rstrip().endswith("# EOF")


def test_metric_helpers_return_the_existing_collector() -> None:
    registry = CollectorRegistry()
    first = counter("aether_test_orders_total", "Orders.", ("venue",), registry=registry)
    again = counter("aether_test_orders_total", "Orders.", ("venue",), registry=registry)
    assert again is first
    assert isinstance(first, Counter)
    assert histogram("aether_test_latency_seconds", "Latency.", registry=registry) is histogram(
        "aether_test_latency_seconds", "Latency.", registry=registry
    )
    assert gauge("aether_test_open", "Open.", registry=registry) is gauge(
        "aether_test_open", "Open.", registry=registry
    )
    first.labels("kraken").inc()
    assert registry.get_sample_value("aether_test_orders_total", {"venue": "kraken"}) == 1.0
    with pytest.raises(ValueError, match="already registered"):
        gauge("aether_test_orders_total", "Clash.", ("venue",), registry=registry)
    with pytest.raises(ValueError, match="already registered"):
        counter("aether_test_orders_total", "Other labels.", ("account",), registry=registry)


# --- tracing ------------------------------------------------------------------------------------------------------


@dataclass
class Collector:
    """A local OTLP/HTTP endpoint on a real socket, recording what exporters POST."""

    url: str
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)

    def spans(self) -> list[tuple[dict[str, str], Any]]:
        found = []
        for path, _, body in self.requests:
            if path != "/v1/traces":
                continue
            for resource_spans in ExportTraceServiceRequest.FromString(body).resource_spans:
                resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                found += [(resource, s) for scope in resource_spans.scope_spans for s in scope.spans]
        return found


@pytest.fixture
def collector() -> Iterator[Collector]:
    recorded: list[tuple[str, str, bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            recorded.append((self.path, self.headers.get("Content-Type", ""), body))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Collector(url=f"http://127.0.0.1:{server.server_address[1]}", requests=recorded)
    server.shutdown()
    server.server_close()
    thread.join()


def test_configure_tracing_is_a_no_op_without_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    app = FastAPI()
    assert configure_tracing("obs-off", app=app) is False
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry


async def test_traces_are_exported_over_otlp_http(
    monkeypatch: pytest.MonkeyPatch, collector: Collector, logs: LogCapture
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    service = "obs-traced"
    app = make_app(service)
    provider = build_tracer_provider(service)
    # Never connects: instrumenting only attaches listeners to the engine.
    engine = create_async_engine("postgresql+psycopg://user:pw@127.0.0.1:9/none")
    try:
        assert configure_tracing(service, app=app, engine=engine, tracer_provider=provider) is True
        assert HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
        assert RedisInstrumentor().is_instrumented_by_opentelemetry
        assert SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            response = await http.get("/items/3", headers={CORRELATION_HEADER: "traced-1"})
            assert response.status_code == 200
        async with httpx.AsyncClient() as outbound:
            assert (await outbound.get(f"{collector.url}/ping")).status_code == 204
        assert await asyncio.to_thread(provider.force_flush, 10_000)
    finally:
        shutdown_tracing()
        await engine.dispose()
    assert not HTTPXClientInstrumentor().is_instrumented_by_opentelemetry
    assert not SQLAlchemyInstrumentor().is_instrumented_by_opentelemetry

    assert any(path == "/v1/traces" and ctype == "application/x-protobuf" for path, ctype, _ in collector.requests)
    spans = collector.spans()
    assert {resource["service.name"] for resource, _ in spans} == {service}
    [server_span] = [s for _, s in spans if s.name == "GET /items/{item_id}" and s.kind == OtlpSpan.SPAN_KIND_SERVER]
    assert any(s.kind == OtlpSpan.SPAN_KIND_CLIENT for _, s in spans)  # the httpx call
    [line] = logs.events("item read")
    assert line["correlation_id"] == "traced-1"
    assert line["trace_id"] == server_span.trace_id.hex()


async def test_database_and_redis_calls_are_traced(
    monkeypatch: pytest.MonkeyPatch, collector: Collector, engine: AsyncEngine, redis_url: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
    service = "obs-stack"
    provider = build_tracer_provider(service)
    key = f"obs-test:{uuid.uuid4().hex}"
    try:
        assert configure_tracing(service, engine=engine, instrument_httpx=False, tracer_provider=provider) is True
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 41 + 1"))).scalar_one() == 42
        client = Redis.from_url(redis_url)
        try:
            await client.set(key, "1", ex=60)
        finally:
            await client.aclose()
        assert await asyncio.to_thread(provider.force_flush, 10_000)
    finally:
        shutdown_tracing()
    spans = [span for _, span in collector.spans()]
    statements = [
        a.value.string_value for s in spans for a in s.attributes if a.key in ("db.statement", "db.query.text")
    ]
    assert "SELECT 41 + 1" in statements
    assert any(s.name == "SET" and s.kind == OtlpSpan.SPAN_KIND_CLIENT for s in spans)
