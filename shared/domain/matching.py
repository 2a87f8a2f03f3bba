"""Simulated matching engine: fills our orders against the visible L2 book and the public trade prints.

Used by the paper venue now and by backtests later; every call takes `now`, so a replay of the same
inputs gives the same reports, trade ids included. The rules, chosen to be conservative (a paper
result should not beat what the market would have given):

- Taking liquidity: a market order walks the opposite side level by level (partial fills, slippage)
  and never beyond the visible depth; what it cannot fill is canceled (`no_liquidity`). A marketable
  limit order takes up to its limit price, then rests (GTC) or is canceled (IOC, `ioc_remainder`).
  FOK fills entirely from the visible depth up to its limit, or is canceled (`fok_not_fillable`).
  Liquidity we took stays consumed until the venue sends a new quantity for that level.
- Post-only that would cross is rejected (`post_only_would_cross`).
- Resting (maker) fills: a trade printing strictly through our price fills us up to the traded
  quantity. At exactly our price we join the back of the queue: the quantity displayed at that price
  when we arrived must trade first. A book update that moves the opposite side through our price
  fills us at our price up to the crossing depth. Several of our orders share a print by price, then
  time priority.
- Stop-loss / take-profit wait for a trade through their trigger, then execute as market orders;
  stop-loss-limit then behaves as a limit order at its limit price.
- Latency (optional): submits and cancels take effect `submit_delay` / `cancel_delay` after they are
  made, on the next call with a later `now` (a fill may beat a delayed cancel).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum

from shared.domain.book import Level, OrderBook
from shared.domain.types import Liquidity, OrderSide, OrderType, TimeInForce

ZERO = Decimal(0)


class ReportKind(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FILL = "fill"
    CANCELED = "canceled"
    TRIGGERED = "triggered"


@dataclass(frozen=True, slots=True)
class SimOrder:
    order_id: str
    side: OrderSide
    type: OrderType
    quantity: Decimal
    limit_price: Decimal | None = None
    trigger_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    post_only: bool = False


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    kind: ReportKind
    order_id: str
    at: datetime
    trade_id: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None
    liquidity: Liquidity | None = None
    leaves: Decimal | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LatencyModel:
    submit_delay: timedelta = timedelta(0)
    cancel_delay: timedelta = timedelta(0)


@dataclass(slots=True)
class _Resting:
    order: SimOrder
    leaves: Decimal
    sequence: int
    queue_ahead: Decimal  # displayed quantity at our price that must trade before us


@dataclass(frozen=True, slots=True)
class RestingState:
    """A resting or waiting order as saved for a restart: the order and what is left of it."""

    order: SimOrder
    leaves: Decimal


@dataclass(order=True, slots=True)
class _Pending:
    due_at: datetime
    sequence: int
    action: str = field(compare=False)
    order: SimOrder | None = field(compare=False, default=None)
    order_id: str = field(compare=False, default="")


def _opposite(side: OrderSide) -> OrderSide:
    return OrderSide.SELL if side is OrderSide.BUY else OrderSide.BUY


def _marketable(side: OrderSide, level_price: Decimal, limit: Decimal | None) -> bool:
    if limit is None:
        return True
    return level_price <= limit if side is OrderSide.BUY else level_price >= limit


class MatchingEngine:
    """One instrument's simulated matching; not thread-safe (the venue serializes calls per symbol)."""

    def __init__(self, symbol: str, latency: LatencyModel | None = None) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.latency = latency
        self._resting: dict[str, _Resting] = {}
        self._waiting: dict[str, SimOrder] = {}  # stop / take-profit orders before their trigger
        self._consumed: dict[tuple[OrderSide, Decimal], Decimal] = {}
        self._pending: list[_Pending] = []
        self._sequence = 0
        self._trades = 0

    # --- commands ------------------------------------------------------------------------------------------

    def submit(self, order: SimOrder, now: datetime) -> list[ExecutionReport]:
        """Accept or reject an order; with latency it takes effect `submit_delay` later (see `advance`)."""
        if self.latency is not None and self.latency.submit_delay > timedelta(0):
            self._queue("submit", now + self.latency.submit_delay, order=order)
            return []
        return self._submit_now(order, now)

    def cancel(self, order_id: str, now: datetime) -> list[ExecutionReport]:
        """Cancel a resting or waiting order (`unknown_order` rejection when there is none)."""
        if self.latency is not None and self.latency.cancel_delay > timedelta(0):
            self._queue("cancel", now + self.latency.cancel_delay, order_id=order_id)
            return []
        return self._cancel_now(order_id, now)

    def advance(self, now: datetime) -> list[ExecutionReport]:
        """Carry out delayed submits and cancels that are due at `now`."""
        reports: list[ExecutionReport] = []
        self._pending.sort()
        while self._pending and self._pending[0].due_at <= now:
            item = self._pending.pop(0)
            if item.action == "submit" and item.order is not None:
                reports += self._submit_now(item.order, item.due_at)
            else:
                reports += self._cancel_now(item.order_id, item.due_at)
        return reports

    # --- market data ---------------------------------------------------------------------------------------

    def on_book_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], now: datetime) -> list[ExecutionReport]:
        reports = self.advance(now)
        self.book.apply_snapshot(bids, asks, now)
        self._consumed.clear()
        return reports + self._cross_resting(now)

    def on_book_delta(self, side: OrderSide, price: Decimal, quantity: Decimal, now: datetime) -> list[ExecutionReport]:
        """Update one level (side BUY = bids); the venue's new quantity replaces what we consumed there."""
        reports = self.advance(now)
        self.book.apply_delta(side, price, quantity, now)
        self._consumed.pop((side, price), None)
        return reports + self._cross_resting(now)

    def on_trade(self, price: Decimal, quantity: Decimal, aggressor: OrderSide, now: datetime) -> list[ExecutionReport]:
        """A public trade print: fills resting orders it passes through and fires stop triggers."""
        reports = self.advance(now)
        reports += self._maker_fills_from_trade(price, quantity, aggressor, now)
        for order_id, order in sorted(self._waiting.items(), key=lambda item: item[0]):
            if self._triggered(order, price):
                del self._waiting[order_id]
                reports.append(ExecutionReport(ReportKind.TRIGGERED, order_id, now, price=price))
                reports += self._execute(self._after_trigger(order), now, accepted=True)
        return reports

    # --- state for restarts --------------------------------------------------------------------------------

    def open_orders(self) -> list[RestingState]:
        resting = [RestingState(r.order, r.leaves) for r in sorted(self._resting.values(), key=lambda r: r.sequence)]
        waiting = [RestingState(order, order.quantity) for order in self._waiting.values()]
        return resting + waiting

    def restore(self, states: Iterable[RestingState]) -> None:
        """Put saved orders back (after a restart) without reporting anything."""
        for state in states:
            if state.order.type in {OrderType.STOP_LOSS, OrderType.TAKE_PROFIT, OrderType.STOP_LOSS_LIMIT} and (
                state.leaves == state.order.quantity
            ):
                self._waiting[state.order.order_id] = state.order
            else:
                self._rest(state.order, state.leaves)

    # --- internals -----------------------------------------------------------------------------------------

    def _queue(self, action: str, due_at: datetime, *, order: SimOrder | None = None, order_id: str = "") -> None:
        self._sequence += 1
        self._pending.append(_Pending(due_at, self._sequence, action, order, order_id))

    def _submit_now(self, order: SimOrder, now: datetime) -> list[ExecutionReport]:
        if order.order_id in self._resting or order.order_id in self._waiting:
            return [ExecutionReport(ReportKind.REJECTED, order.order_id, now, reason="duplicate_order_id")]
        if order.type in {OrderType.STOP_LOSS, OrderType.TAKE_PROFIT, OrderType.STOP_LOSS_LIMIT}:
            self._waiting[order.order_id] = order
            return [ExecutionReport(ReportKind.ACCEPTED, order.order_id, now, leaves=order.quantity)]
        if order.post_only and self._would_take(order):
            return [ExecutionReport(ReportKind.REJECTED, order.order_id, now, reason="post_only_would_cross")]
        return self._execute(order, now, accepted=False)

    def _execute(self, order: SimOrder, now: datetime, *, accepted: bool) -> list[ExecutionReport]:
        reports = [] if accepted else [ExecutionReport(ReportKind.ACCEPTED, order.order_id, now, leaves=order.quantity)]
        limit = order.limit_price if order.type in {OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT} else None
        if order.time_in_force is TimeInForce.FOK and self._available(order.side, limit) < order.quantity:
            return [
                *reports,
                ExecutionReport(
                    ReportKind.CANCELED, order.order_id, now, leaves=order.quantity, reason="fok_not_fillable"
                ),
            ]
        fills, leaves = self._take(order, limit, now)
        reports += fills
        if leaves == 0:
            return reports
        if limit is None:
            reason = "no_liquidity"
        elif order.time_in_force is TimeInForce.GTC:
            self._rest(order, leaves)
            return reports
        else:
            reason = "ioc_remainder"
        return [*reports, ExecutionReport(ReportKind.CANCELED, order.order_id, now, leaves=leaves, reason=reason)]

    def _would_take(self, order: SimOrder) -> bool:
        best = self.book.best_ask if order.side is OrderSide.BUY else self.book.best_bid
        return best is not None and order.limit_price is not None and _marketable(order.side, best, order.limit_price)

    def _available(self, side: OrderSide, limit: Decimal | None) -> Decimal:
        opposite = _opposite(side)
        return sum(
            (
                qty - self._consumed.get((opposite, price), ZERO)
                for price, qty in self.book.levels(opposite)
                if _marketable(side, price, limit)
            ),
            ZERO,
        )

    def _take(self, order: SimOrder, limit: Decimal | None, now: datetime) -> tuple[list[ExecutionReport], Decimal]:
        opposite = _opposite(order.side)
        remaining = order.quantity
        reports: list[ExecutionReport] = []
        for price, qty in self.book.levels(opposite):
            if remaining == 0 or not _marketable(order.side, price, limit):
                break
            available = qty - self._consumed.get((opposite, price), ZERO)
            if available <= 0:
                continue
            taken = min(remaining, available)
            self._consumed[(opposite, price)] = self._consumed.get((opposite, price), ZERO) + taken
            remaining -= taken
            reports.append(self._fill(order.order_id, taken, price, Liquidity.TAKER, remaining, now))
        return reports, remaining

    def _rest(self, order: SimOrder, leaves: Decimal) -> None:
        self._sequence += 1
        queue = self.book.quantity_at(order.side, order.limit_price) if order.limit_price is not None else ZERO
        self._resting[order.order_id] = _Resting(order, leaves, self._sequence, queue)

    def _cancel_now(self, order_id: str, now: datetime) -> list[ExecutionReport]:
        resting = self._resting.pop(order_id, None)
        if resting is not None:
            return [ExecutionReport(ReportKind.CANCELED, order_id, now, leaves=resting.leaves, reason="canceled")]
        waiting = self._waiting.pop(order_id, None)
        if waiting is not None:
            return [ExecutionReport(ReportKind.CANCELED, order_id, now, leaves=waiting.quantity, reason="canceled")]
        return [ExecutionReport(ReportKind.REJECTED, order_id, now, reason="unknown_order")]

    def _fill(
        self, order_id: str, quantity: Decimal, price: Decimal, liquidity: Liquidity, leaves: Decimal, now: datetime
    ) -> ExecutionReport:
        self._trades += 1
        return ExecutionReport(
            ReportKind.FILL,
            order_id,
            now,
            trade_id=f"{self.symbol}-{self._trades}",
            quantity=quantity,
            price=price,
            liquidity=liquidity,
            leaves=leaves,
        )

    def _by_priority(self, side: OrderSide) -> list[_Resting]:
        ours = [r for r in self._resting.values() if r.order.side is side]
        sign = -1 if side is OrderSide.BUY else 1
        return sorted(ours, key=lambda r: (sign * (r.order.limit_price or ZERO), r.sequence))

    def _maker_fills_from_trade(
        self, price: Decimal, quantity: Decimal, aggressor: OrderSide, now: datetime
    ) -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        volume = quantity
        for side in (OrderSide.BUY, OrderSide.SELL):
            for resting in self._by_priority(side):
                if volume <= 0:
                    return reports
                volume = self._fill_from_print(resting, price, volume, aggressor, now, reports)
        return reports

    def _fill_from_print(
        self,
        resting: _Resting,
        price: Decimal,
        volume: Decimal,
        aggressor: OrderSide,
        now: datetime,
        reports: list[ExecutionReport],
    ) -> Decimal:
        limit = resting.order.limit_price
        if limit is None:  # only limit orders rest; kept for the type checker
            return volume
        through = price < limit if resting.order.side is OrderSide.BUY else price > limit
        if not through:
            if price != limit or aggressor is resting.order.side:
                return volume
            # At our price: the displayed queue ahead of us trades first.
            used = min(volume, resting.queue_ahead)
            resting.queue_ahead -= used
            volume -= used
            if volume <= 0:
                return volume
        taken = min(volume, resting.leaves)
        self._apply_maker_fill(resting, taken, limit, now, reports)
        return volume - taken

    def _apply_maker_fill(
        self, resting: _Resting, quantity: Decimal, price: Decimal, now: datetime, reports: list[ExecutionReport]
    ) -> None:
        resting.leaves -= quantity
        reports.append(self._fill(resting.order.order_id, quantity, price, Liquidity.MAKER, resting.leaves, now))
        if resting.leaves == 0:
            del self._resting[resting.order.order_id]

    def _cross_resting(self, now: datetime) -> list[ExecutionReport]:
        """The opposite side moved through resting orders: they fill at their price up to the crossing depth."""
        reports: list[ExecutionReport] = []
        for side in (OrderSide.BUY, OrderSide.SELL):
            for resting in self._by_priority(side):
                limit = resting.order.limit_price
                if limit is None:
                    continue
                depth = self._available(side, limit)
                if depth <= 0:
                    continue
                taken = min(depth, resting.leaves)
                self._consume(side, limit, taken)
                self._apply_maker_fill(resting, taken, limit, now, reports)
        return reports

    def _consume(self, side: OrderSide, limit: Decimal, quantity: Decimal) -> None:
        opposite = _opposite(side)
        for price, qty in self.book.levels(opposite):
            if quantity <= 0 or not _marketable(side, price, limit):
                return
            available = qty - self._consumed.get((opposite, price), ZERO)
            used = min(available, quantity)
            if used > 0:
                self._consumed[(opposite, price)] = self._consumed.get((opposite, price), ZERO) + used
                quantity -= used

    @staticmethod
    def _triggered(order: SimOrder, price: Decimal) -> bool:
        trigger = order.trigger_price
        if trigger is None:
            return False
        stop_like = order.type in {OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT}
        falling = (order.side is OrderSide.SELL) == stop_like
        return price <= trigger if falling else price >= trigger

    @staticmethod
    def _after_trigger(order: SimOrder) -> SimOrder:
        if order.type is OrderType.STOP_LOSS_LIMIT:
            return replace(order, type=OrderType.LIMIT)
        return replace(order, type=OrderType.MARKET, limit_price=None)
