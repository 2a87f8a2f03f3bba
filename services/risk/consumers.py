"""Kafka handlers of the risk service; each is idempotent through the `risk.inbox` table."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.adapters import risk_adapters
from services.risk.exits.workers import WORKERS as EXIT_WORKERS
from services.risk.service import RiskService
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.contracts.base import ContractViolation
from shared.contracts.hedge import KillSwitchRecommended, RecommendationRearmed
from shared.contracts.registry import parse_message
from shared.domain.hedge import HedgeLevel
from shared.domain.money import format_decimal
from shared.domain.types import TradingState
from shared.events import Envelope
from shared.events.topics import HEDGE_RECOMMENDATION_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)

RECOMMENDATION_ACTOR = "hedge-recommendation"
# Every level has its state: a level the contract adds fails here (KeyError at import), never at run time.
LEVEL_STATES: Mapping[HedgeLevel, TradingState] = MappingProxyType(
    {
        HedgeLevel.PAUSE: TradingState.HALTED,
        HedgeLevel.REDUCE_ONLY: TradingState.REDUCING,
        HedgeLevel.FLATTEN: TradingState.REDUCING,
    }
)
assert set(LEVEL_STATES) == set(HedgeLevel)  # noqa: S101 - a new level needs a decision here


def risk_service(runtime: ServiceRuntime) -> RiskService:
    return risk_adapters(runtime).risk


async def handle_recommendation(risk: RiskService, session: AsyncSession, envelope: Envelope) -> None:
    """`KillSwitchRecommended` from the hedge service: applied to the account's trading state when
    AETHER_AUTO_APPLY_RECOMMENDATIONS is true; only ever tightens (a HALTED account stays HALTED)."""
    message = parse_message(envelope, HEDGE_RECOMMENDATION_EVENTS)  # ContractViolation: dead-lettered
    if isinstance(message, RecommendationRearmed):
        return
    if not isinstance(message, KillSwitchRecommended):
        raise ContractViolation(f"{envelope.type} is not a message of {HEDGE_RECOMMENDATION_EVENTS}")
    if not risk.settings.auto_apply_recommendations:
        return
    target = LEVEL_STATES[message.level]
    reason = (
        f"hedge recommendation {message.recommendation_id}: {message.level.value} "
        f"(drawdown {format_decimal(message.drawdown)}, threshold {format_decimal(message.threshold)})"
    )
    change = await risk.change_state_in(
        session, "account", message.account_id, target, reason, RECOMMENDATION_ACTOR, None
    )
    if change.changed:
        # The consumer loop commits this session: mirror to Redis once it has (the periodic mirror is the backstop).
        event.listen(session.sync_session, "after_commit", lambda _: risk.mirror_wake.set(), once=True)


def _recommendations(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        risk = risk_service(runtime)
        await run_consumer(
            runtime,
            name="risk.recommendations",
            topics=[HEDGE_RECOMMENDATION_EVENTS],
            handler=lambda session, envelope: handle_recommendation(risk, session, envelope),
        )

    return run


def _mirror(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        risk = risk_service(runtime)
        while not runtime.stop_event.is_set():
            risk.mirror_wake.clear()
            try:
                await risk.mirror_all()
            except Exception as exc:  # Redis or PG down: readiness is red; try again next tick
                log.warning("mirror_failed", error_type=type(exc).__name__, error=str(exc)[:300])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(runtime.stop_event, risk.mirror_wake), risk.settings.mirror_interval_s)

    return run


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waits = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waits:
            waiter.cancel()


# (name, worker factory) pairs started by the app's lifespan.
WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("state-mirror", _mirror),
    ("recommendations", _recommendations),
    *EXIT_WORKERS,
)
