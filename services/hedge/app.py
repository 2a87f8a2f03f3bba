"""Composition root of the hedge service."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from fastapi import FastAPI

from services.hedge import api, consumers
from services.hedge.approval import OverrideApprovalPolicy
from services.hedge.config import HedgeSettings, get_settings
from services.hedge.service import HedgeService
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.config import AetherSettings


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    settings: AetherSettings | None = None, oms_transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """Build the hedge app; settings default to the environment; `oms_transport` reaches the OMS in tests."""
    if settings is None:
        hedge_settings = get_settings()
    elif isinstance(settings, HedgeSettings):
        hedge_settings = settings
    else:
        hedge_settings = HedgeSettings(**settings.model_dump(exclude={"service_name"}))

    async def on_startup(runtime: ServiceRuntime) -> None:
        runtime.extras["hedge"] = HedgeService(
            settings=hedge_settings,
            sessionmaker=runtime.sessionmaker,
            tables=runtime.tables,
            clock=utc_now,
            on_commit=runtime.relay.wake,
            approvals=OverrideApprovalPolicy(runtime.redis),
        )
        if oms_transport is not None:
            runtime.extras["oms_transport"] = oms_transport

    spec = ServiceSpec(
        name="hedge",
        title="Aether Hedge",
        description="Volatility- and drawdown-driven de-risking, operator overrides, kill-switch recommendations.",
        routers=[api.router],
        workers=consumers.WORKERS,
        on_startup=on_startup,
    )
    return build_service_app(spec, hedge_settings)
