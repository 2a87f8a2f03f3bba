"""Simulated matching engine: fills our orders against the visible L2 book and the public trade prints.

Used by the paper venue now and by backtests later. There is no clock inside: every call takes `now`, so the
same inputs give the same reports, trade ids (`f"{symbol}-{n}"`) included. Our orders are invisible to the
public market and never match each other. The rules, chosen so that a paper result does not beat what the
market would have given:

- Taking: a market order walks the opposite side level by level (partial fills, slippage) and never beyond
  the visible depth; what it cannot fill is canceled (`no_liquidity`): market orders are IOC whatever their
  time in force (FOK excepted: all or nothing). A marketable limit order takes up to its limit price, then
  rests (GTC) or is canceled (IOC, `ioc_remainder`). FOK checks the visible depth up to its limit first and
  is canceled untouched (`fok_not_fillable`) when it falls short.
- Consumed liquidity: what we take (or what crossing resting orders fill from) is remembered per level and
  subtracted from the displayed quantity, so a second order does not take the same liquidity again
  (`shared.domain.free_liquidity`: a decrease of the displayed quantity first uses up our consumption, an
  increase is new liquidity behind it; a removed level forgets it; a snapshot is read level by level the same
  way, so the next snapshot of the same book state does not offer again what we took).
- Post-only that would cross the displayed opposite best price is rejected (`post_only_would_cross`).
- Resting (maker) fills from trade prints: a print strictly through our price fills us up to its quantity.
  At exactly our price we stand behind the quantity that was displayed at that price when we arrived
  (`queue_ahead`); prints at that price by an aggressor of the other side use up that queue before they
  reach us. The queue ahead never exceeds what the book shows at that price later (it only shrinks).
  Several of our orders share one print by price, then time priority.
- Resting fills from book moves: when the opposite side comes through a resting order (best ask <= our
  buy), it fills as maker at its own limit price, up to the free crossing depth.
- Stop-loss / take-profit wait for a trade print through the trigger (sell stop-loss: price <= trigger,
  sell take-profit: price >= trigger, mirrored for buys), report `triggered`, then execute as market
  orders; stop-loss-limit then behaves as a limit order at its limit price.
- Latency (optional): submits and cancels take effect `submit_delay` / `cancel_delay` after they are made,
  carried out by `advance(now)` (which every market-data call runs first), so a fill may beat a cancel.
  `submit` and `cancel` only report on their own order: call `advance(now)` before them to carry out
  earlier delayed actions first.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from itertools import takewhile

from shared.domain.book import Level, MarketDataError, OrderBook, check_level
from shared.domain.free_liquidity import FreeLiquidity, marketable, opposite
from shared.domain.order_requests import LIMIT_PRICED_TYPES, TRIGGERED_TYPES
from shared.domain.sim_orders import RestingOrder, RestingOrders, SimOrder, StopTriggers
from shared.domain.types import Liquidity, OrderSide, OrderType, TimeInForce

ZERO = Decimal(0)


class ReportKind(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FILL = "fill"
    CANCELED = "canceled"
    EXPIRED = "expired"  # reserved for good-till-date orders; IOC/FOK remainders are CANCELED with a reason
    TRIGGERED = "triggered"


class Reason(StrEnum):
    """Machine-readable reasons of rejections and cancellations."""

    CANCELED = "canceled"  # canceled on request
    POST_ONLY_WOULD_CROSS = "post_only_would_cross"
    NO_LIQUIDITY = "no_liquidity"
    FOK_NOT_FILLABLE = "fok_not_fillable"
    IOC_REMAINDER = "ioc_remainder"
    UNKNOWN_ORDER = "unknown_order"
    DUPLICATE_ORDER_ID = "duplicate_order_id"
    INVALID_QUANTITY = "invalid_quantity"
    INVALID_PRICE = "invalid_price"  # limit/trigger price missing, not positive, or given where not allowed
    POST_ONLY_NOT_ALLOWED = "post_only_not_allowed"  # post-only needs a GTC limit order


class PendingAction(StrEnum):
    SUBMIT = "submit"
    CANCEL = "cancel"


class InvalidTrade(MarketDataError):
    """A trade print with a non-positive price or quantity."""

    code = "invalid_trade"


class EngineStateError(ValueError):
    """A saved state that cannot be restored."""

    code = "invalid_engine_state"


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    """What happened to one order; fills carry trade id, quantity, price, liquidity and the quantity left."""

    kind: ReportKind
    order_id: str
    at: datetime
    trade_id: str | None = None
    quantity: Decimal | None = None
    price: Decimal | None = None  # fills: the fill price; triggered: the trade price that fired the trigger
    liquidity: Liquidity | None = None
    leaves: Decimal | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class LatencyModel:
    submit_delay: timedelta = timedelta(0)
    cancel_delay: timedelta = timedelta(0)

    def __post_init__(self) -> None:
        if self.submit_delay < timedelta(0) or self.cancel_delay < timedelta(0):
            raise ValueError("latency delays must not be negative")


@dataclass(frozen=True, slots=True)
class RestingState:
    """A resting or waiting order as saved for a restart: the order and what is left of it.

    `triggered`: a stop-loss-limit that has fired and now rests as a limit. `queue_ahead`: the displayed
    quantity ahead of it at its price; None puts it at the back of the level displayed when restored.
    """

    order: SimOrder
    leaves: Decimal
    triggered: bool = False
    queue_ahead: Decimal | None = None


@dataclass(frozen=True, slots=True)
class PendingState:
    """A delayed submit or cancel that has not taken effect yet."""

    due_at: datetime
    action: PendingAction
    order_id: str
    order: SimOrder | None = None


@dataclass(frozen=True, slots=True)
class ConsumedLevel:
    """Liquidity our orders took from one displayed level (`book_side` is the side of the level)."""

    book_side: OrderSide
    price: Decimal
    quantity: Decimal


@dataclass(frozen=True, slots=True)
class EngineState:
    """Everything the engine knows besides the market (`pydantic.TypeAdapter(EngineState)` serializes it)."""

    orders: tuple[RestingState, ...]  # in time priority
    pending: tuple[PendingState, ...]  # in the order they take effect
    trade_sequence: int
    # What we took from the displayed book: the next snapshot of the same book state must not offer it again,
    # after a restart too (states saved before this field read as none taken).
    consumed: tuple[ConsumedLevel, ...] = ()


@dataclass(order=True, slots=True)
class _Pending:
    due_at: datetime
    sequence: int
    action: PendingAction = field(compare=False)
    order_id: str = field(compare=False)
    order: SimOrder | None = field(compare=False, default=None)


def _bad_price(price: Decimal | None) -> bool:
    return price is not None and (not price.is_finite() or price <= 0)


def order_error(order: SimOrder) -> Reason | None:
    """Why the engine would reject `order` as malformed, or None."""
    if not order.quantity.is_finite() or order.quantity <= 0:
        return Reason.INVALID_QUANTITY
    if (order.type in LIMIT_PRICED_TYPES) != (order.limit_price is not None) or _bad_price(order.limit_price):
        return Reason.INVALID_PRICE
    if (order.type in TRIGGERED_TYPES) != (order.trigger_price is not None) or _bad_price(order.trigger_price):
        return Reason.INVALID_PRICE
    if order.post_only and (order.type is not OrderType.LIMIT or order.time_in_force is not TimeInForce.GTC):
        return Reason.POST_ONLY_NOT_ALLOWED
    return None


def _has_fired(saved: RestingState) -> bool:
    return saved.triggered or saved.leaves < saved.order.quantity


def _check_saved(saved: RestingState) -> None:
    order = saved.order
    if order_error(order) is not None or not ZERO < saved.leaves <= order.quantity:
        raise EngineStateError(f"order {order.order_id}: not a valid open order ({saved})")
    can_wait = order.type in TRIGGERED_TYPES and not _has_fired(saved)
    if not can_wait and order.type not in LIMIT_PRICED_TYPES:
        raise EngineStateError(f"order {order.order_id}: a {order.type} order cannot rest")
    if saved.queue_ahead is not None and saved.queue_ahead < 0:
        raise EngineStateError(f"order {order.order_id}: negative queue ahead")


class MatchingEngine:
    """One instrument's simulated matching; not thread-safe (the caller serializes calls per symbol)."""

    def __init__(self, symbol: str, latency: LatencyModel | None = None) -> None:
        self.symbol = symbol
        self.book = OrderBook(symbol)
        self.latency = latency
        self._liquidity = FreeLiquidity(self.book)
        self._resting = RestingOrders()
        self._stops = StopTriggers()
        self._pending: list[_Pending] = []  # heap by (due_at, sequence)
        self._sequence = 0
        self._trade_sequence = 0

    # --- commands ------------------------------------------------------------------------------------------

    def submit(self, order: SimOrder, now: datetime) -> list[ExecutionReport]:
        """Accept (and execute) or reject an order; with a submit delay it takes effect later, on `advance`."""
        if self.latency is not None and self.latency.submit_delay > timedelta(0):
            self._queue(PendingAction.SUBMIT, now + self.latency.submit_delay, order.order_id, order)
            return []
        return self._submit_now(order, now)

    def cancel(self, order_id: str, now: datetime) -> list[ExecutionReport]:
        """Cancel a resting or waiting order (`unknown_order` rejection when there is none)."""
        if self.latency is not None and self.latency.cancel_delay > timedelta(0):
            self._queue(PendingAction.CANCEL, now + self.latency.cancel_delay, order_id)
            return []
        return self._cancel_now(order_id, now)

    def advance(self, now: datetime) -> list[ExecutionReport]:
        """Carry out the delayed submits and cancels due at or before `now`, each at its due time."""
        reports: list[ExecutionReport] = []
        while self._pending and self._pending[0].due_at <= now:
            item = heapq.heappop(self._pending)
            if item.action is PendingAction.SUBMIT and item.order is not None:
                reports += self._submit_now(item.order, item.due_at)
            else:
                reports += self._cancel_now(item.order_id, item.due_at)
        return reports

    def free_levels(self, side: OrderSide, limit: Decimal | None = None) -> list[tuple[Decimal, Decimal]]:
        """(price, free quantity) an order of `side` could take now up to `limit`, best first: the displayed book
        less what our orders already took (what a market buy must reserve from)."""
        return list(self._liquidity.levels(side, limit))

    def preview(self, order: SimOrder) -> list[tuple[Decimal, Decimal]]:
        """(price, quantity) per level that `order` would take if it were executed now, without changing anything
        (empty for an order that would not take: a stop, a post-only, a delayed submit, a FOK that falls short)."""
        delayed = self.latency is not None and self.latency.submit_delay > timedelta(0)
        if delayed or order.type in TRIGGERED_TYPES or order.post_only or order_error(order) is not None:
            return []
        limit = order.limit_price if order.type in LIMIT_PRICED_TYPES else None
        takes = self._liquidity.preview(order.side, limit, order.quantity)
        if order.time_in_force is TimeInForce.FOK and sum(taken for _, taken in takes) < order.quantity:
            return []
        return takes

    @property
    def has_orders(self) -> bool:
        """Whether an order rests, waits for its trigger or is delayed (else a trade print changes nothing)."""
        return bool(self._pending) or len(self._resting) > 0 or len(self._stops) > 0

    @property
    def has_consumption(self) -> bool:
        """Whether our orders took liquidity the book still shows (else a snapshot only replaces the book)."""
        return bool(self._liquidity)

    # --- market data ---------------------------------------------------------------------------------------

    def on_book_snapshot(self, bids: Iterable[Level], asks: Iterable[Level], now: datetime) -> list[ExecutionReport]:
        """Replace the book (a crossed one raises `CrossedBook` before anything changes); what we took stays taken
        where the snapshot still shows it."""
        fresh = OrderBook(self.symbol)
        fresh.apply_snapshot(bids, asks, now)
        reports = self.advance(now)
        self._liquidity.rebase(fresh)
        self.book.load(fresh)
        for resting in self._resting:
            shown = self.book.quantity_at(resting.order.side, resting.price)
            resting.queue_ahead = min(resting.queue_ahead, shown)
        return reports + self._cross_resting(now)

    def on_book_delta(self, side: OrderSide, price: Decimal, quantity: Decimal, now: datetime) -> list[ExecutionReport]:
        """Set one level to its new quantity (side BUY = bids), then fill resting orders the book now crosses."""
        level = [(price, quantity)]
        if side is OrderSide.BUY:
            return self.on_book_update(level, [], now)
        return self.on_book_update([], level, now)

    def on_book_update(self, bids: Iterable[Level], asks: Iterable[Level], now: datetime) -> list[ExecutionReport]:
        """Apply the changed levels of one venue message together, then fill resting orders the book now crosses."""
        changes = [(OrderSide.BUY, check_level(*level)) for level in bids]
        changes += [(OrderSide.SELL, check_level(*level)) for level in asks]
        reports = self.advance(now)
        for side, (price, quantity) in changes:
            self._liquidity.reconcile(side, price, quantity)
            self.book.apply_delta(side, price, quantity, now)
            for resting in self._resting.at_price(side, price, self._sequence):
                resting.queue_ahead = min(resting.queue_ahead, quantity)
        return reports + self._cross_resting(now)

    def on_trade(self, price: Decimal, quantity: Decimal, aggressor: OrderSide, now: datetime) -> list[ExecutionReport]:
        """A public trade print: fills resting orders it reaches, then fires the stop triggers it passes."""
        if not price.is_finite() or not quantity.is_finite() or price <= 0 or quantity <= 0:
            raise InvalidTrade(f"invalid trade {quantity} @ {price}")
        reports = self.advance(now)
        volume = self._fills_from_print(OrderSide.BUY, price, quantity, aggressor, now, reports)
        self._fills_from_print(OrderSide.SELL, price, volume, aggressor, now, reports)
        return reports + self._fire_triggers(price, now)

    # --- state ---------------------------------------------------------------------------------------------

    def open_orders(self) -> list[RestingState]:
        """Resting and waiting orders with what is left of them, in time priority."""
        return list(self.snapshot_state().orders)

    def snapshot_state(self) -> EngineState:
        """The engine's own state for a restart (the book comes back from market data)."""
        resting = [(r.sequence, RestingState(r.order, r.leaves, r.triggered, r.queue_ahead)) for r in self._resting]
        waiting = [(w.sequence, RestingState(w.order, w.order.quantity)) for w in self._stops]
        pending = [PendingState(p.due_at, p.action, p.order_id, p.order) for p in sorted(self._pending)]
        orders = tuple(state for _, state in sorted(resting + waiting, key=lambda item: item[0]))
        consumed = tuple(ConsumedLevel(side, price, quantity) for side, price, quantity in self._liquidity.consumed())
        return EngineState(orders, tuple(pending), self._trade_sequence, consumed)

    def restore(self, state: EngineState | Iterable[RestingState]) -> None:
        """Replace the orders (and, from an `EngineState`, delayed actions and trade counter) without reporting.

        A plain list of `RestingState`s is what a venue rebuilds from its own records: an unfilled stop goes
        back to waiting for its trigger unless marked `triggered`.
        """
        orders = state.orders if isinstance(state, EngineState) else tuple(state)
        for saved in orders:
            _check_saved(saved)
        self._resting.clear()
        self._stops.clear()
        self._pending.clear()
        for saved in orders:
            if saved.order.type in TRIGGERED_TYPES and not _has_fired(saved):
                self._wait(saved.order)
            else:
                triggered = saved.order.type in TRIGGERED_TYPES
                self._rest(saved.order, saved.leaves, triggered=triggered, queue_ahead=saved.queue_ahead)
        if isinstance(state, EngineState):
            self._trade_sequence = state.trade_sequence
            for pending in state.pending:
                self._queue(pending.action, pending.due_at, pending.order_id, pending.order)
            self._liquidity.load((level.book_side, level.price, level.quantity) for level in state.consumed)

    # --- internals: commands -------------------------------------------------------------------------------

    def _queue(self, action: PendingAction, due_at: datetime, order_id: str, order: SimOrder | None = None) -> None:
        self._sequence += 1
        heapq.heappush(self._pending, _Pending(due_at, self._sequence, action, order_id, order))

    def _submit_now(self, order: SimOrder, now: datetime) -> list[ExecutionReport]:
        error = order_error(order)
        if error is None and (order.order_id in self._resting or order.order_id in self._stops):
            error = Reason.DUPLICATE_ORDER_ID
        # Against the displayed best, consumed or not: the real venue would refuse it too.
        if error is None and order.post_only and self._liquidity.would_take(order.side, order.limit_price):
            error = Reason.POST_ONLY_WOULD_CROSS
        if error is not None:
            return [ExecutionReport(ReportKind.REJECTED, order.order_id, now, reason=error)]
        accepted = ExecutionReport(ReportKind.ACCEPTED, order.order_id, now, leaves=order.quantity)
        if order.type in TRIGGERED_TYPES:
            self._wait(order)
            return [accepted]
        return [accepted, *self._execute(order, now)]

    def _execute(self, order: SimOrder, now: datetime) -> list[ExecutionReport]:
        limit = order.limit_price if order.type in LIMIT_PRICED_TYPES else None
        if order.time_in_force is TimeInForce.FOK and self._liquidity.depth(order.side, limit, order.quantity) < (
            order.quantity
        ):
            return [self._canceled(order.order_id, order.quantity, Reason.FOK_NOT_FILLABLE, now)]
        reports, leaves = self._take(order, limit, now)
        if leaves == 0:
            return reports
        if limit is None:
            reports.append(self._canceled(order.order_id, leaves, Reason.NO_LIQUIDITY, now))
        elif order.time_in_force is TimeInForce.GTC:
            self._rest(order, leaves, triggered=order.type in TRIGGERED_TYPES)
        else:
            reports.append(self._canceled(order.order_id, leaves, Reason.IOC_REMAINDER, now))
        return reports

    def _cancel_now(self, order_id: str, now: datetime) -> list[ExecutionReport]:
        resting = self._resting.get(order_id)
        if resting is not None:
            self._resting.remove(resting)
            return [self._canceled(order_id, resting.leaves, Reason.CANCELED, now)]
        waiting = self._stops.remove(order_id)
        if waiting is not None:
            return [self._canceled(order_id, waiting.order.quantity, Reason.CANCELED, now)]
        return [ExecutionReport(ReportKind.REJECTED, order_id, now, reason=Reason.UNKNOWN_ORDER)]

    def _wait(self, order: SimOrder) -> None:
        self._sequence += 1
        self._stops.add(order, self._sequence)

    def _rest(self, order: SimOrder, leaves: Decimal, *, triggered: bool, queue_ahead: Decimal | None = None) -> None:
        price = order.limit_price if order.limit_price is not None else ZERO  # validated: never None here
        if queue_ahead is None:
            queue_ahead = self.book.quantity_at(order.side, price)
        self._sequence += 1
        self._resting.add(RestingOrder(order, price, leaves, self._sequence, queue_ahead, triggered))

    # --- internals: taking liquidity -----------------------------------------------------------------------

    def _take(self, order: SimOrder, limit: Decimal | None, now: datetime) -> tuple[list[ExecutionReport], Decimal]:
        remaining = order.quantity
        reports: list[ExecutionReport] = []
        for price, taken in self._liquidity.take(order.side, limit, order.quantity):
            remaining -= taken
            reports.append(self._fill(order.order_id, taken, price, Liquidity.TAKER, remaining, now))
        return reports, remaining

    # --- internals: maker fills ----------------------------------------------------------------------------

    def _fills_from_print(
        self,
        side: OrderSide,
        price: Decimal,
        volume: Decimal,
        aggressor: OrderSide,
        now: datetime,
        reports: list[ExecutionReport],
    ) -> Decimal:
        """Fill our `side` orders that a print of `volume` at `price` reaches; returns the volume left."""
        reached = list(takewhile(lambda r: marketable(side, price, r.price), self._resting.side(side)))
        for resting in reached:
            if volume <= 0:
                break
            if resting.price != price:
                taken = min(volume, resting.leaves)  # strictly through our price
            elif aggressor is side:
                continue  # a print at our price by our own side's aggressor lifted the other side, not us
            else:
                taken = min(resting.leaves, max(volume - resting.queue_ahead, ZERO))
                resting.queue_ahead = max(resting.queue_ahead - volume, ZERO)
            if taken > 0:
                volume -= taken
                reports.append(self._maker_fill(resting, taken, now))
        return volume

    def _cross_resting(self, now: datetime) -> list[ExecutionReport]:
        """Resting orders the opposite side has come through fill at their price up to the free crossing depth."""
        reports: list[ExecutionReport] = []
        for side in (OrderSide.BUY, OrderSide.SELL):
            best = self.book.best(opposite(side))
            if best is not None:
                self._cross_side(side, best, now, reports)
        return reports

    def _cross_side(self, side: OrderSide, best: Decimal, now: datetime, reports: list[ExecutionReport]) -> None:
        for resting in list(takewhile(lambda r: marketable(side, best, r.price), self._resting.side(side))):
            depth = self._liquidity.depth(side, resting.price, resting.leaves)
            if depth <= 0:
                continue
            taken = min(depth, resting.leaves)
            self._liquidity.take(side, resting.price, taken)
            reports.append(self._maker_fill(resting, taken, now))

    def _maker_fill(self, resting: RestingOrder, quantity: Decimal, now: datetime) -> ExecutionReport:
        resting.leaves -= quantity
        if resting.leaves == 0:
            self._resting.remove(resting)
        return self._fill(resting.order.order_id, quantity, resting.price, Liquidity.MAKER, resting.leaves, now)

    # --- internals: triggers and reports -------------------------------------------------------------------

    def _fire_triggers(self, price: Decimal, now: datetime) -> list[ExecutionReport]:
        reports: list[ExecutionReport] = []
        for waiting in self._stops.fire(price):
            order_id = waiting.order.order_id
            reports.append(
                ExecutionReport(ReportKind.TRIGGERED, order_id, now, price=price, leaves=waiting.order.quantity)
            )
            reports += self._execute(waiting.order, now)
        return reports

    def _fill(
        self, order_id: str, quantity: Decimal, price: Decimal, liquidity: Liquidity, leaves: Decimal, now: datetime
    ) -> ExecutionReport:
        self._trade_sequence += 1
        return ExecutionReport(
            ReportKind.FILL,
            order_id,
            now,
            trade_id=f"{self.symbol}-{self._trade_sequence}",
            quantity=quantity,
            price=price,
            liquidity=liquidity,
            leaves=leaves,
        )

    @staticmethod
    def _canceled(order_id: str, leaves: Decimal, reason: Reason, now: datetime) -> ExecutionReport:
        return ExecutionReport(ReportKind.CANCELED, order_id, now, leaves=leaves, reason=reason)
