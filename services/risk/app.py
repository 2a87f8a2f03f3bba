"""Composition root of the risk service."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from fastapi import FastAPI

from services.risk import api, consumers
from services.risk.config import RiskSettings, get_settings
from services.risk.service import RiskService
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.readiness import DependencyCheck


def utc_now() -> datetime:
    return datetime.now(UTC)


async def build_adapters(runtime: ServiceRuntime) -> None:
    """The risk service on the runtime's engine and Redis; readiness waits for the first PG -> Redis mirror."""
    settings = runtime.settings
    if not isinstance(settings, RiskSettings):
        settings = RiskSettings(**settings.model_dump(exclude={"service_name"}))
    risk = RiskService(
        settings=settings,
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        redis=runtime.redis,
        clock=utc_now,
        on_commit=runtime.relay.wake,
    )
    runtime.extras["risk"] = risk
    runtime.checks.append(DependencyCheck("redis-mirror", _mirrored(risk)))


def _mirrored(risk: RiskService) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        if risk.last_mirror_error is not None:
            raise RuntimeError(f"trading state mirror failed: {risk.last_mirror_error}")
        if not risk.mirrored_once:
            raise RuntimeError("trading states and limits not yet mirrored to Redis")

    return probe


SPEC = ServiceSpec(
    name="risk",
    title="Aether Risk",
    description="Pre-trade limits, trading state (kill switch, safe mode) and exit brackets.",
    routers=[api.router],
    workers=consumers.WORKERS,
    on_startup=build_adapters,
)


def create_app(settings: RiskSettings | None = None) -> FastAPI:
    """Build the risk app; settings default to the environment."""
    return build_service_app(SPEC, settings or get_settings())
