"""Composition root of the risk service."""

from __future__ import annotations

from fastapi import FastAPI

from services.risk import api, consumers
from services.risk.config import RiskSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app

SPEC = ServiceSpec(
    name="risk",
    title="Aether Risk",
    description="Pre-trade limits, trading state (kill switch, safe mode) and exit brackets.",
    routers=[api.router],
    workers=consumers.WORKERS,
)


def create_app(settings: RiskSettings | None = None) -> FastAPI:
    """Build the risk app; settings default to the environment."""
    return build_service_app(SPEC, settings or get_settings())
