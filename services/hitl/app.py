"""Composition root of the hitl service."""

from __future__ import annotations

from fastapi import FastAPI

from services.hitl import api, consumers
from services.hitl.config import HitlSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app

SPEC = ServiceSpec(
    name="hitl",
    title="Aether Approvals",
    description="Director approval of large or unusual requests (human in the loop).",
    routers=[api.router],
    workers=consumers.WORKERS,
)


def create_app(settings: HitlSettings | None = None) -> FastAPI:
    """Build the hitl app; settings default to the environment."""
    return build_service_app(SPEC, settings or get_settings())
