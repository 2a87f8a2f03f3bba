"""Composition root of the analytics service."""

from __future__ import annotations

from fastapi import FastAPI

from services.analytics import api, consumers
from services.analytics.config import AnalyticsSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app
from shared.config import AetherSettings, service_settings

SPEC = ServiceSpec(
    name="analytics",
    title="Aether Analytics",
    description="Market-data features and model outputs.",
    routers=[api.router],
    workers=consumers.WORKERS,
)


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the analytics app; settings default to the environment."""
    return build_service_app(SPEC, service_settings(settings, AnalyticsSettings, get_settings))
