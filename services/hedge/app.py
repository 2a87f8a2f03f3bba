"""Composition root of the hedge service."""

from __future__ import annotations

from fastapi import FastAPI

from services.hedge import api, consumers
from services.hedge.adapters import HedgeAdapters
from services.hedge.approval import OverrideApprovalPolicy
from services.hedge.config import HedgeSettings, get_settings
from services.hedge.metrics import OpenRecommendations
from services.hedge.use_cases import HedgeContext
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.auth.service_tokens import authenticate_commands
from shared.clock import utc_now
from shared.config import AetherSettings, service_settings


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the hedge app; settings default to the environment."""
    hedge_settings = service_settings(settings, HedgeSettings, get_settings)

    async def on_startup(runtime: ServiceRuntime) -> None:
        open_recommendations = OpenRecommendations(runtime.sessionmaker)

        def committed() -> None:
            runtime.relay.wake()
            open_recommendations.refresher.wake()

        context = HedgeContext.create(
            hedge_settings, runtime.sessionmaker, runtime.tables, clock=utc_now, on_commit=committed
        )
        runtime.spawn("hedge.recommendation-metrics", lambda: open_recommendations.refresher.run(runtime.stop_event))
        runtime.adapters = HedgeAdapters.assemble(context, OverrideApprovalPolicy(runtime.redis))
        authenticate_commands(runtime, hedge_settings, [hedge_settings.commands_topic])

    spec = ServiceSpec(
        name="hedge",
        title="Aether Hedge",
        description="Volatility- and drawdown-driven de-risking, operator overrides, kill-switch recommendations.",
        routers=[api.router],
        workers=consumers.WORKERS,
        on_startup=on_startup,
    )
    return build_service_app(spec, hedge_settings)
