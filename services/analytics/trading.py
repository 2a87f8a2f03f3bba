"""Trading anomalies: an account's fills far from the stored book, and its orders' fill rate falling, from the OMS's
order events (consumed through `analytics.inbox`; the OMS's tables are never read).

Slippage: each `OrderFilled` is compared with the newest stored book snapshot of its symbol (any venue; the OMS's
events name none) taken at or before the fill and at most `book_max_age` older. A taker fill is expected at the
walk price of its quantity through the opposite side (the part beyond the visible depth at the worst visible
price); a maker fill at the mid. The slippage in bps is signed so that positive is worse for the account; beyond
`slippage_bps` either way it is an anomaly (a price far better than the book is as suspect as one far worse). No
book in reach: no verdict (never a guess).

Fill rate: per account and symbol, of the orders submitted within `fill_rate_window` before an event whose outcome
is known (a fill, or canceled / rejected / expired), the share that got any fill. With at least
`fill_rate_min_orders` such orders and a share below `fill_rate_threshold`, a low episode opens and is reported
once; it closes when the share is back at or above the threshold, or the window holds too few orders to say. Its
venue is `oms` (the events name none). Outcomes older than the window are pruned by the anomaly scan.

PnL jumps (services/analytics/pnl_jumps.py) are found from the same fills, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession

from services.analytics import repository
from services.analytics.anomalies import ORDER_VENUE, anomaly, record
from services.analytics.pnl_jumps import PnlJumps
from shared.clock import utc_now
from shared.contracts.analytics import AnomalyDetected, AnomalyKind
from shared.contracts.orders import (
    OrderCanceled,
    OrderEventMessage,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    OrderSubmitted,
)
from shared.contracts.registry import parse_message
from shared.domain.types import Liquidity, OrderSide
from shared.events import Envelope, EventTables

BPS = Decimal(10_000)
_CENTS = Decimal("0.01")
_RATE = Decimal("0.0001")
_MAX_BPS = Decimal(10) ** 15


@dataclass(frozen=True, slots=True)
class TradingPolicy:
    """What counts as a trading anomaly."""

    slippage_bps: Decimal = Decimal(50)
    book_max_age: timedelta = timedelta(seconds=60)
    fill_rate_window: timedelta = timedelta(hours=1)
    fill_rate_min_orders: int = 10
    fill_rate_threshold: Decimal = Decimal("0.2")


def walk_price(levels: Sequence[Sequence[str]], quantity: Decimal) -> Decimal | None:
    """The average price of taking `quantity` from `levels` (best first); the rest at the worst visible price."""
    if not levels or quantity <= 0:
        return None
    left, cost = quantity, Decimal(0)
    for price_text, qty_text in levels:
        price, take = Decimal(price_text), min(Decimal(qty_text), left)
        cost += price * take
        left -= take
        if left == 0:
            break
    cost += Decimal(levels[-1][0]) * left
    return cost / quantity


def expected_price(
    side: OrderSide,
    liquidity: Liquidity,
    quantity: Decimal,
    bids: Sequence[Sequence[str]],
    asks: Sequence[Sequence[str]],
) -> Decimal | None:
    """What the book says the fill should have cost: the walk price for a taker, the mid for a maker."""
    if liquidity == Liquidity.MAKER:
        if not bids or not asks:
            return None
        return (Decimal(bids[0][0]) + Decimal(asks[0][0])) / 2
    return walk_price(asks if side == OrderSide.BUY else bids, quantity)


def slippage_bps(side: OrderSide, price: Decimal, expected: Decimal) -> Decimal:
    """The fill's distance from the expectation in bps; positive is worse for the account."""
    worse = price - expected if side == OrderSide.BUY else expected - price
    return worse / expected * BPS


def low_fill_rate(total: int, filled: int, policy: TradingPolicy) -> Decimal | None:
    """The fill rate when it is below the threshold over enough orders; None when it is not (or cannot be said)."""
    if total < policy.fill_rate_min_orders:
        return None
    rate = Decimal(filled) / Decimal(total)
    return rate if rate < policy.fill_rate_threshold else None


async def prune_outcomes(session: AsyncSession, now: datetime, policy: TradingPolicy) -> int:
    """Forget the outcomes of orders submitted before the fill-rate window (kept one window more for late events)."""
    return await repository.prune_order_outcomes(session, now - 2 * policy.fill_rate_window)


class TradingAnomalies:
    """The order-event handler of the analytics service (see the module docstring)."""

    def __init__(self, tables: EventTables, policy: TradingPolicy, pnl: PnlJumps) -> None:
        self._tables = tables
        self._policy = policy
        self._pnl = pnl

    async def handle(self, session: AsyncSession, envelope: Envelope) -> list[AnomalyDetected]:
        """Apply one order event in the inbox's transaction; return the anomalies recorded for the first time."""
        message = parse_message(envelope)
        if not isinstance(message, OrderSubmitted | OrderFilled | OrderCanceled | OrderRejected | OrderExpired):
            return []
        found: list[AnomalyDetected] = []
        filled = isinstance(message, OrderFilled)
        closed = message.is_final if isinstance(message, OrderFilled) else not isinstance(message, OrderSubmitted)
        await repository.record_outcome(
            session,
            message.order_id,
            message.account_id,
            message.symbol,
            message.occurred_at,
            filled=filled,
            closed=closed,
        )
        if isinstance(message, OrderFilled):
            found += await self._slippage(session, message)
            found += await self._pnl.on_fill(session, message)
        if not isinstance(message, OrderSubmitted):
            found += await self._fill_rate(session, message)
        return await record(session, self._tables, found, utc_now()) if found else []

    async def _slippage(self, session: AsyncSession, fill: OrderFilled) -> list[AnomalyDetected]:
        book = await repository.book_at(
            session, fill.symbol, fill.occurred_at, fill.occurred_at - self._policy.book_max_age
        )
        if book is None:
            return []
        quantity, price = Decimal(fill.quantity), Decimal(fill.price)
        expected = expected_price(fill.side, fill.liquidity, quantity, book.bids, book.asks)
        if expected is None or expected <= 0:
            return []
        bps = slippage_bps(fill.side, price, expected)
        if abs(bps) <= self._policy.slippage_bps:
            return []
        detail = (
            f"{fill.liquidity} {fill.side} {quantity} at {price}: {bps:+.2f} bps from the book's "
            f"{expected:.8f} (snapshot {book.taken_at.isoformat()}), trade {fill.trade_id}"
        )
        magnitude = min(abs(bps), _MAX_BPS).quantize(_CENTS)  # NUMERIC(38,18) holds it; the detail has the real value
        return [
            anomaly(
                AnomalyKind.SLIPPAGE,
                book.venue,
                fill.symbol,
                fill.occurred_at,
                utc_now(),
                magnitude,
                detail,
                fill.account_id,
            )
        ]

    async def _fill_rate(self, session: AsyncSession, event: OrderEventMessage) -> list[AnomalyDetected]:
        account, symbol, at = event.account_id, event.symbol, event.occurred_at
        total, filled = await repository.fill_rate(session, account, symbol, at - self._policy.fill_rate_window)
        rate = low_fill_rate(total, filled, self._policy)
        if rate is None:
            await repository.close_fill_rate_episode(session, account, symbol)
            return []
        if not await repository.open_fill_rate_episode(session, account, symbol, at):
            return []
        minutes = int(self._policy.fill_rate_window.total_seconds() // 60)
        detail = (
            f"{filled} of {total} orders submitted in the last {minutes} min got a fill "
            f"(threshold {self._policy.fill_rate_threshold})"
        )
        return [
            anomaly(
                AnomalyKind.FILL_RATE_DROP, ORDER_VENUE, symbol, at, utc_now(), rate.quantize(_RATE), detail, account
            )
        ]
