"""Pieces every service's API shares: the runtime dependency and the authenticated `/info` route."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict

from shared.app_factory import VERSION, ServiceRuntime
from shared.auth.dependencies import CurrentPrincipal
from shared.errors import COMMON_RESPONSES


def get_runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[ServiceRuntime, Depends(get_runtime)]


class ServiceInfo(BaseModel):
    """Identity of a running service and how far its outbox is behind."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    service: str
    version: str
    environment: str
    outbox_backlog: int


async def describe_service(runtime: ServiceRuntime) -> ServiceInfo:
    return ServiceInfo(
        service=runtime.name,
        version=VERSION,
        environment=runtime.settings.env.value,
        outbox_backlog=await runtime.relay.relay_lag(),
    )


def info_router(service: str) -> APIRouter:
    """`GET /<service>/info` for any authenticated principal."""
    router = APIRouter(prefix=f"/{service}", tags=[service], responses=COMMON_RESPONSES)

    @router.get("/info", response_model=ServiceInfo, summary=f"Describe the {service} service")
    async def info(principal: CurrentPrincipal, runtime: RuntimeDep) -> ServiceInfo:
        """Service name, version, environment and outbox backlog."""
        return await describe_service(runtime)

    return router
