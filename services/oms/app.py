"""Composition root of the oms service."""

from __future__ import annotations

from fastapi import FastAPI

from services.oms import api, consumers
from services.oms.config import OmsSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app

SPEC = ServiceSpec(
    name="oms",
    title="Aether Order management",
    description="Orders, fills, positions and balances; the simulated broker and venue adapters.",
    routers=[api.router],
    workers=consumers.WORKERS,
)


def create_app(settings: OmsSettings | None = None) -> FastAPI:
    """Build the oms app; settings default to the environment."""
    return build_service_app(SPEC, settings or get_settings())
