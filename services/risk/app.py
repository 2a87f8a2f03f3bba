"""Composition root of the risk service."""

from __future__ import annotations

from fastapi import FastAPI

from services.risk import api, consumers
from services.risk.adapters import build_risk_adapters
from services.risk.config import RiskSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app
from shared.config import AetherSettings, service_settings

SPEC = ServiceSpec(
    name="risk",
    title="Aether Risk",
    description="Pre-trade limits, trading state (kill switch, safe mode) and exit brackets.",
    routers=[api.router],
    workers=consumers.WORKERS,
    on_startup=build_risk_adapters,
)


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the risk app; settings default to the environment, platform-wide ones get the risk defaults."""
    return build_service_app(SPEC, service_settings(settings, RiskSettings, get_settings))
