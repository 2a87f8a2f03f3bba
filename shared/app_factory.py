"""Composition of a service process: one FastAPI app with the platform's wiring.

Every service's `create_app()` calls `build_service_app()` with its own routers and consumers. The
lifespan creates the adapters (engine, Redis, Kafka producer, outbox relay, consumers), the
middleware adds correlation ids and metrics, and `/healthz`, `/readyz`, `/metrics` are mounted.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from shared.auth.revocation import redis_revocation_check
from shared.auth.tokens import TokenVerifier
from shared.body_limit import BodySizeLimitMiddleware
from shared.config import AetherSettings, ConfigurationError, env_name
from shared.db import create_engine, sessionmaker_for
from shared.errors import install_error_handlers
from shared.events.consumer import ConsumerLoop, Handler
from shared.events.producer import EventProducer
from shared.events.relay import OutboxRelay
from shared.events.tables import EventTables, event_tables
from shared.observability.correlation import CorrelationIdMiddleware
from shared.observability.logging import configure_logging, get_logger
from shared.observability.metrics import MetricsMiddleware, gauge, mount_metrics
from shared.observability.tracing import configure_tracing, shutdown_tracing
from shared.rate_limit import RateLimitMiddleware, TokenBucketLimiter, limits_from
from shared.readiness import DependencyCheck, KafkaProbe, kafka_check, postgres_check, redis_check, run_checks

log = get_logger(__name__)

READY = gauge(
    "aether_ready", "1 when the last /readyz answered ready, else 0 (set by each readiness probe)", ["service"]
)

VERSION = "0.1.0"


@dataclass
class ServiceRuntime:
    """The adapters one service process owns; built in the lifespan, reachable as `app.state.runtime`."""

    name: str
    settings: AetherSettings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    producer: EventProducer
    tables: EventTables
    relay: OutboxRelay
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    checks: list[DependencyCheck] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    # Service-specific adapters built by the spec's `on_startup` (e.g. the OMS's venue and order service).
    extras: dict[str, Any] = field(default_factory=dict)
    # The service's typed composition root (a frozen dataclass of its use cases and adapters), set by
    # `on_startup`; read it with `adapters_of(runtime, TheServiceAdapters)`.
    adapters: object | None = None
    # Closed in reverse order after the background tasks have stopped.
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def spawn(self, name: str, work: Callable[[], Awaitable[None]]) -> None:
        """Run `work` in the background for the life of the process, restarting it after failures."""
        self.tasks.append(asyncio.create_task(supervise(name, work, self.stop_event), name=name))


BackgroundWorker = Callable[[ServiceRuntime], Callable[[], Awaitable[None]]]

AdaptersT = TypeVar("AdaptersT")


def adapters_of(runtime: ServiceRuntime, kind: type[AdaptersT]) -> AdaptersT:
    """The service's typed adapters; a missing or foreign object is a start-up bug, never a silent None."""
    adapters = runtime.adapters
    if not isinstance(adapters, kind):
        raise RuntimeError(f"{runtime.name}: adapters are {type(adapters).__name__}, expected {kind.__name__}")
    return adapters


@dataclass(frozen=True)
class ServiceSpec:
    """What distinguishes one service: its name, schema, routers and background workers."""

    name: str
    title: str
    description: str
    routers: Sequence[APIRouter]
    workers: Sequence[tuple[str, BackgroundWorker]] = ()
    openapi_tags: Sequence[dict[str, Any]] = ()
    # Builds service-specific adapters into `runtime.extras` before the workers start; may add readiness checks.
    on_startup: Callable[[ServiceRuntime], Awaitable[None]] | None = None
    # Request body limits in bytes by exact path; every other route gets `settings.max_body_bytes`.
    body_limits: Mapping[str, int] = field(default_factory=dict)

    @property
    def schema(self) -> str:
        return self.name


async def run_consumer(
    runtime: ServiceRuntime,
    *,
    name: str,
    topics: Sequence[str],
    handler: Handler,
    group_id: str | None = None,
    auto_offset_reset: str = "earliest",
) -> None:
    """Consume `topics` with the service's inbox and dead-letter producer until the runtime stops.

    `name` is the inbox consumer name and, unless `group_id` says otherwise, the Kafka consumer group.
    """
    loop = ConsumerLoop(
        bootstrap=runtime.settings.kafka_bootstrap,
        security_protocol=runtime.settings.kafka_security_protocol,
        group_id=group_id or name,
        topics=list(topics),
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        handler=handler,
        consumer_name=name,
        dead_letter_producer=runtime.producer,
        auto_offset_reset=auto_offset_reset,
    )
    await loop.start()
    try:
        await loop.run(runtime.stop_event)
    finally:
        await loop.stop()


async def supervise(name: str, work: Callable[[], Awaitable[None]], stop_event: asyncio.Event) -> None:
    """Keep a background loop alive: a failure is logged and retried with jittered backoff, never swallowed silently."""
    delay_s = 0.5
    while not stop_event.is_set():
        try:
            await work()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("background_task_failed", task=name, error_type=type(exc).__name__, error=str(exc)[:300])
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop_event.wait(), timeout=delay_s * (0.5 + random.random()))  # noqa: S311 - jitter, not crypto
        delay_s = min(delay_s * 2, 15.0)


def token_verifier_for(settings: AetherSettings) -> TokenVerifier:
    if settings.jwt_public_key is None:
        raise ConfigurationError(
            f"{env_name('jwt_public_key')}: required to verify bearer tokens (or set it as a _FILE)"
        )
    return TokenVerifier(
        public_key_pem=settings.jwt_public_key.get_secret_value().encode(),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )


async def _start_runtime(spec: ServiceSpec, settings: AetherSettings) -> ServiceRuntime:
    engine = create_engine(settings, application_name=f"aether-{spec.name}")
    redis = Redis.from_url(settings.redis_url.get_secret_value(), socket_timeout=2.0, socket_connect_timeout=2.0)
    producer = EventProducer(
        bootstrap=settings.kafka_bootstrap,
        client_id=f"aether-{spec.name}",
        security_protocol=settings.kafka_security_protocol,
    )
    tables = event_tables(spec.schema)
    sessionmaker = sessionmaker_for(engine)
    relay = OutboxRelay(sessionmaker, tables, producer)
    runtime = ServiceRuntime(spec.name, settings, engine, sessionmaker, redis, producer, tables, relay)
    kafka_probe = KafkaProbe(settings.kafka_bootstrap, settings.kafka_security_protocol)
    runtime.checks = [postgres_check(engine), redis_check(redis), kafka_check(kafka_probe)]

    async def run_relay() -> None:
        await producer.start()
        await relay.run(runtime.stop_event)

    runtime.spawn(f"{spec.name}.outbox-relay", run_relay)
    if spec.on_startup is not None:
        await spec.on_startup(runtime)
    for worker_name, worker in spec.workers:
        runtime.spawn(f"{spec.name}.{worker_name}", worker(runtime))
    runtime.tasks.append(asyncio.create_task(_close_on_stop(kafka_probe, runtime.stop_event)))
    return runtime


async def _close_on_stop(probe: KafkaProbe, stop_event: asyncio.Event) -> None:
    await stop_event.wait()
    await probe.close()


async def _stop_runtime(runtime: ServiceRuntime) -> None:
    runtime.stop_event.set()
    relay_wake = getattr(runtime.relay, "wake", None)
    if callable(relay_wake):
        relay_wake()
    _, pending = await asyncio.wait(runtime.tasks, timeout=10)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for close in reversed(runtime.closers):
        await close()
    await runtime.producer.stop()
    await runtime.redis.aclose()
    await runtime.engine.dispose()


def build_service_app(spec: ServiceSpec, settings: AetherSettings) -> FastAPI:
    """Assemble the FastAPI app of one service (composition root)."""
    configure_logging(spec.name, level=settings.log_level, json_logs=settings.log_json)
    verifier = token_verifier_for(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await _start_runtime(spec, settings)
        app.state.runtime = runtime
        app.state.rate_limiter = TokenBucketLimiter(runtime.redis, limits_from(settings))
        # Revoked access tokens (logout, refresh-token reuse) are refused by every service: Redis `auth:revoked:<jti>`.
        app.state.token_verifier = verifier.with_revocation(redis_revocation_check(runtime.redis))
        log.info("service_started", service=spec.name, version=VERSION, env=settings.env.value)
        try:
            yield
        finally:
            await _stop_runtime(runtime)
            shutdown_tracing()
            log.info("service_stopped", service=spec.name)

    app = FastAPI(
        title=spec.title,
        description=spec.description,
        version=VERSION,
        lifespan=lifespan,
        openapi_tags=list(spec.openapi_tags) or None,
    )
    app.state.token_verifier = verifier
    # Before the first ASGI call: instrumentation adds middleware; engines created later are covered too.
    configure_tracing(spec.name, app=app)
    app.state.service_name = spec.name
    install_error_handlers(app)
    app.add_middleware(MetricsMiddleware, service=spec.name)
    app.add_middleware(CorrelationIdMiddleware)
    app.add_middleware(BodySizeLimitMiddleware, default_bytes=settings.max_body_bytes, limits=spec.body_limits)
    if settings.rate_limit_enabled:
        # Outside the body limit: a flood is refused before its bodies are read.
        app.add_middleware(RateLimitMiddleware, service=spec.name, verifier=verifier, limiter=lambda: _limiter_of(app))
    if settings.trusted_proxies:
        # X-Forwarded-For / -Proto are believed only from these peers (uvicorn's own handling is off, see cli serve).
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=list(settings.trusted_proxies))
    _mount_probes(app, settings, spec.name)
    mount_metrics(app)
    for router in spec.routers:
        app.include_router(router)
    return app


def _limiter_of(app: FastAPI) -> TokenBucketLimiter | None:
    limiter: TokenBucketLimiter | None = getattr(app.state, "rate_limiter", None)
    return limiter


def _mount_probes(app: FastAPI, settings: AetherSettings, service: str) -> None:
    ready_gauge = READY.labels(service)
    ready_gauge.set(0)

    @app.get("/healthz", tags=["probes"], include_in_schema=False)
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], include_in_schema=False)
    async def readyz() -> JSONResponse:
        """Readiness: PostgreSQL, Redis and Kafka answer (503 with the reasons otherwise)."""
        runtime: ServiceRuntime | None = getattr(app.state, "runtime", None)
        if runtime is None:
            ready_gauge.set(0)
            return JSONResponse({"status": "starting", "checks": {}}, status_code=503)
        results = await run_checks(runtime.checks, settings.readiness_timeout_s)
        ready = all(result.ok for result in results)
        ready_gauge.set(1 if ready else 0)
        body = {
            "status": "ready" if ready else "not_ready",
            "checks": {result.name: {"ok": result.ok, "reason": result.reason} for result in results},
        }
        return JSONResponse(body, status_code=200 if ready else 503)
