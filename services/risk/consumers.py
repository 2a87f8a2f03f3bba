"""Kafka handlers of the risk service; each is idempotent through the `risk.inbox` table."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession

from services.risk.exits.workers import WORKERS as EXIT_WORKERS
from services.risk.service import RiskService
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.domain.types import TradingState
from shared.events import Envelope
from shared.events.topics import HEDGE_RECOMMENDATION_EVENTS
from shared.observability.logging import get_logger

log = get_logger(__name__)

RECOMMENDATION_ACTOR = "hedge-recommendation"
LEVEL_STATES = {"pause": TradingState.HALTED, "reduce_only": TradingState.REDUCING, "flatten": TradingState.REDUCING}


def risk_service(runtime: ServiceRuntime) -> RiskService:
    service: RiskService = runtime.extras["risk"]
    return service


async def handle_recommendation(risk: RiskService, session: AsyncSession, envelope: Envelope) -> None:
    """`KillSwitchRecommended` from the hedge service: applied to the account's trading state when
    AETHER_AUTO_APPLY_RECOMMENDATIONS is true; only ever tightens (a HALTED account stays HALTED)."""
    if envelope.type != "KillSwitchRecommended" or not risk.settings.auto_apply_recommendations:
        return
    payload = envelope.payload
    target = LEVEL_STATES.get(str(payload.get("level")))
    account_id = payload.get("account_id")
    if target is None or not isinstance(account_id, str) or not account_id:
        log.warning("recommendation_ignored", level=str(payload.get("level")), event_id=str(envelope.event_id))
        return
    reason = (
        f"hedge recommendation {payload.get('recommendation_id')}: {payload.get('level')} "
        f"(drawdown {payload.get('drawdown')}, threshold {payload.get('threshold')})"
    )
    change = await risk.change_state_in(session, "account", account_id, target, reason, RECOMMENDATION_ACTOR, None)
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
