"""Background work of the hedge service: market data, OMS order events, OMS balance events and approval decisions
from Kafka (each idempotent through the `hedge.inbox` table), and the tick that revalues every tracked account
at the latest prices."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from services.hedge.adapters import HedgeAdapters
from services.hedge.use_cases import BalanceUpdate
from shared.app_factory import BackgroundWorker, ServiceRuntime, adapters_of, run_consumer
from shared.contracts.balances import BalanceChanged
from shared.contracts.features import FeaturesComputed
from shared.contracts.registry import parse_as
from shared.events import Envelope
from shared.marketdata import BookSnapshot, MarketDataError, Trade, decode_marketdata
from shared.observability.logging import get_logger

log = get_logger(__name__)


async def handle_marketdata(hedge: HedgeAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """Trades give their price, snapshots their mid; deltas are left to the OMS's book (documented)."""
    try:
        message = decode_marketdata(envelope)
    except MarketDataError as exc:
        log.warning("hedge_marketdata_skipped", error=str(exc)[:300])
        return
    if isinstance(message, Trade):
        await hedge.evaluation.observe_price(session, message.symbol, message.price, message.timestamp)
    elif isinstance(message, BookSnapshot) and message.bids and message.asks:
        mid = (message.bids[0].price + message.asks[0].price) / 2
        await hedge.evaluation.observe_price(session, message.symbol, mid, message.timestamp)


async def handle_feature_event(hedge: HedgeAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """`FeaturesComputed` from the analytics service: with volatility_source=features, the symbol's variance
    from the configured realized volatility (a bar without one leaves it as it was)."""
    event = parse_as(FeaturesComputed, envelope)
    name = hedge.settings.volatility_feature
    realized = getattr(event, name)
    if realized is None:
        return
    at = event.bar_start + timedelta(seconds=event.bar_seconds)
    await hedge.evaluation.observe_realized_volatility(session, event.symbol, realized, int(name.split("_")[1]), at)


async def handle_order_event(hedge: HedgeAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """OMS order events settle the hedge's own orders; `CommandRejected` settles a refused command."""
    await hedge.orders.on_order_event(session, envelope)


async def handle_balance_event(hedge: HedgeAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """`BalanceChanged` from the OMS: the account's balance of one asset, dropped when its version is stale.

    Anything else, or a payload that breaks the contract, raises ContractViolation (dead-lettered)."""
    event = parse_as(BalanceChanged, envelope)
    update = BalanceUpdate(
        asset=event.asset,
        total=event.total,
        reserved=event.reserved,
        version=event.version,
        changed_at=event.changed_at,
    )
    await hedge.evaluation.apply_balances(session, event.account_id, [update])


async def handle_decision(hedge: HedgeAdapters, session: AsyncSession, envelope: Envelope) -> None:
    """`ApprovalDecided` from the approval service settles a pending hedge override."""
    await hedge.overrides.on_decision(session, envelope)
    hedge.context.on_commit()  # the evaluation may have queued a hedge command: nudge the relay


def _consumer(
    name: str,
    topics: Callable[[HedgeAdapters], list[str]],
    handler: Callable[[HedgeAdapters, AsyncSession, Envelope], Awaitable[None]],
    enabled: Callable[[HedgeAdapters], bool] = lambda hedge: True,
) -> BackgroundWorker:
    def build(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            hedge = adapters_of(runtime, HedgeAdapters)
            if not enabled(hedge):
                return
            await run_consumer(
                runtime,
                name=f"hedge.{name}",
                topics=topics(hedge),
                handler=lambda session, envelope: handler(hedge, session, envelope),
            )

        return run

    return build


async def revalue_all(hedge: HedgeAdapters) -> int:
    """Revalue and evaluate every tracked account with quiet balances once at the latest prices; returns how many."""
    accounts = await hedge.evaluation.accounts_to_revalue()
    for account_id in accounts:
        await hedge.evaluation.revalue(account_id)
    return len(accounts)


def _revaluation_tick(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        hedge = adapters_of(runtime, HedgeAdapters)
        while not runtime.stop_event.is_set():
            await revalue_all(hedge)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=hedge.settings.revalue_interval_s)

    return run


WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    (
        "marketdata",
        _consumer(
            "marketdata",
            lambda hedge: [hedge.settings.marketdata_book_topic, hedge.settings.marketdata_trade_topic],
            handle_marketdata,
        ),
    ),
    ("order-events", _consumer("order-events", lambda hedge: [hedge.settings.order_events_topic], handle_order_event)),
    (
        "balance-events",
        _consumer("balance-events", lambda hedge: [hedge.settings.balance_events_topic], handle_balance_event),
    ),
    ("decisions", _consumer("decisions", lambda hedge: [hedge.settings.decisions_topic], handle_decision)),
    (
        "feature-events",
        _consumer(
            "feature-events",
            lambda hedge: [hedge.settings.feature_events_topic],
            handle_feature_event,
            enabled=lambda hedge: hedge.settings.volatility_source == "features",
        ),
    ),
    ("revaluation", _revaluation_tick),
)
