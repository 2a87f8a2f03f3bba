"""Composition root of the reports service."""

from __future__ import annotations

from fastapi import FastAPI

from services.reports import api, consumers
from services.reports.adapters import build_adapters
from services.reports.config import ReportsSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app
from shared.config import AetherSettings, service_settings

SPEC = ServiceSpec(
    name="reports",
    title="Aether Reports",
    description="Daily PnL, NAV and performance reports.",
    routers=[api.router],
    workers=consumers.WORKERS,
    on_startup=build_adapters,
)


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the reports app; settings default to the environment."""
    return build_service_app(SPEC, service_settings(settings, ReportsSettings, get_settings))
