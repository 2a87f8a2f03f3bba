"""Composition root of the hedge service."""

from __future__ import annotations

from fastapi import FastAPI

from services.hedge import api, consumers
from services.hedge.config import HedgeSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app

SPEC = ServiceSpec(
    name="hedge",
    title="Aether Hedge",
    description="Volatility- and drawdown-driven de-risking, operator overrides, kill-switch recommendations.",
    routers=[api.router],
    workers=consumers.WORKERS,
)


def create_app(settings: HedgeSettings | None = None) -> FastAPI:
    """Build the hedge app; settings default to the environment."""
    return build_service_app(SPEC, settings or get_settings())
