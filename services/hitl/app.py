"""Composition root of the hitl service."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import FastAPI

from services.hitl import api, consumers, ui
from services.hitl.config import HitlSettings, get_settings
from services.hitl.mirror import PolicyMirror
from services.hitl.service import HitlService
from shared.app_factory import ServiceRuntime, ServiceSpec, build_service_app
from shared.config import AetherSettings


def utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(settings: AetherSettings | None = None) -> FastAPI:
    """Build the hitl app; settings default to the environment (platform settings get the hitl defaults)."""
    if settings is None:
        hitl_settings = get_settings()
    elif isinstance(settings, HitlSettings):
        hitl_settings = settings
    else:
        hitl_settings = HitlSettings(**settings.model_dump(exclude={"service_name"}))

    async def on_startup(runtime: ServiceRuntime) -> None:
        mirror = PolicyMirror(sessionmaker=runtime.sessionmaker, redis=runtime.redis)
        runtime.extras["policy_mirror"] = mirror
        runtime.extras["hitl"] = HitlService(
            sessionmaker=runtime.sessionmaker,
            tables=runtime.tables,
            clock=utc_now,
            decisions_topic=hitl_settings.decisions_topic,
            on_commit=runtime.relay.wake,
            mirror=mirror,
        )

    spec = ServiceSpec(
        name="hitl",
        title="Aether Approvals",
        description="Director approval of large or unusual requests (human in the loop).",
        routers=[api.router, ui.router],
        workers=consumers.WORKERS,
        on_startup=on_startup,
    )
    app = build_service_app(spec, hitl_settings)
    app.state.hitl_settings = hitl_settings
    return app
