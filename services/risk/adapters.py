"""The risk service's typed composition root: its use cases and adapters, built once per process.

`services/risk/app.py` builds it in the lifespan and stores it in `runtime.adapters`; routers, consumers and
workers read it with `risk_adapters(runtime)`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from services.risk.config import RiskSettings
from services.risk.exits.service import ExitContext
from services.risk.exits.use_cases import ExitUseCases, exit_use_cases
from services.risk.metrics import StateMetrics
from services.risk.service import RiskService
from shared.app_factory import ServiceRuntime, adapters_of
from shared.auth.service_tokens import authenticate_commands
from shared.clock import utc_now


@dataclass(frozen=True, slots=True)
class RiskAdapters:
    settings: RiskSettings
    risk: RiskService
    exits: ExitUseCases
    state_metrics: StateMetrics


async def build_risk_adapters(runtime: ServiceRuntime) -> None:
    """The risk and exit use cases on the runtime's engine, Redis and outbox relay (readiness: the factory's
    PG, Redis and Kafka checks cover the controls snapshot and the exit workers)."""
    settings = runtime.settings
    if not isinstance(settings, RiskSettings):
        raise TypeError(f"the risk service runs on RiskSettings, not {type(settings).__name__}")
    state_metrics = StateMetrics(runtime.sessionmaker)

    def committed() -> None:
        runtime.relay.wake()
        state_metrics.refresher.wake()

    risk = RiskService(
        settings=settings,
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        redis=runtime.redis,
        clock=utc_now,
        on_commit=committed,
    )
    context = ExitContext(
        settings=settings,
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        clock=utc_now,
        on_commit=runtime.relay.wake,
    )
    runtime.adapters = RiskAdapters(
        settings=settings, risk=risk, exits=exit_use_cases(context), state_metrics=state_metrics
    )
    # Exit orders reach the OMS as commands authenticated by the risk worker's service identity.
    authenticate_commands(runtime, settings, [settings.exits_commands_topic])


def risk_adapters(runtime: ServiceRuntime) -> RiskAdapters:
    return adapters_of(runtime, RiskAdapters)


def _from_request(request: Request) -> RiskAdapters:
    return risk_adapters(request.app.state.runtime)


Adapters = Annotated[RiskAdapters, Depends(_from_request)]
