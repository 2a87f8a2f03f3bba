"""Composition root of the risk service."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI

from services.risk import api, consumers
from services.risk.config import RiskSettings, get_settings
from services.risk.service import RiskService
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.config import AetherSettings


def utc_now() -> datetime:
    return datetime.now(UTC)


async def build_adapters(runtime: ServiceRuntime) -> None:
    """The risk service on the runtime's engine and Redis (readiness: the factory's PG, Redis and Kafka checks;
    the mirror worker needs PG and Redis, so they cover it)."""
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


SPEC = ServiceSpec(
    name="risk",
    title="Aether Risk",
    description="Pre-trade limits, trading state (kill switch, safe mode) and exit brackets.",
    routers=[api.router],
    workers=consumers.WORKERS,
    on_startup=build_adapters,
)


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the risk app; settings default to the environment, platform-wide ones get the risk defaults."""
    if settings is None:
        risk_settings = get_settings()
    elif isinstance(settings, RiskSettings):
        risk_settings = settings
    else:
        risk_settings = RiskSettings(**settings.model_dump(exclude={"service_name"}))
    return build_service_app(SPEC, risk_settings)
