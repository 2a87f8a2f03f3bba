"""Composition root of the hitl service."""

from __future__ import annotations

from fastapi import FastAPI

from services.hitl import api, consumers, ui
from services.hitl.adapters import build_hitl_adapters
from services.hitl.config import HitlSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app
from shared.config import AetherSettings, service_settings

SPEC = ServiceSpec(
    name="hitl",
    title="Aether Approvals",
    description="Director approval of large or unusual requests (human in the loop).",
    routers=[api.router, ui.router],
    workers=consumers.WORKERS,
    on_startup=build_hitl_adapters,
)


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the hitl app; settings default to the environment (platform settings get the hitl defaults)."""
    return build_service_app(SPEC, service_settings(settings, HitlSettings, get_settings))
