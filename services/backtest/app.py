"""Composition root of the backtest service."""

from __future__ import annotations

from fastapi import FastAPI

from services.backtest import api, consumers
from services.backtest.adapters import build_adapters
from services.backtest.config import BacktestSettings, get_settings
from shared.app_factory import ServiceSpec, build_service_app
from shared.config import AetherSettings, service_settings

SPEC = ServiceSpec(
    name="backtest",
    title="Aether Backtest",
    description="Backtests on the same simulated broker that paper trading uses.",
    routers=[api.router],
    workers=consumers.WORKERS,
    on_startup=build_adapters,
)


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the backtest app; settings default to the environment."""
    return build_service_app(SPEC, service_settings(settings, BacktestSettings, get_settings))
