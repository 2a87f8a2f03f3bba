"""Microstructure features: one pure definition per feature, evaluated by both engines (docs/features.md).

Everything is per (venue, symbol) and per fixed bar of `BAR_SECONDS` (1 minute, aligned to the epoch). A bar's
inputs are exact integers (trade counts, quantities in `QTY_SCALE` units, notionals in `NOTIONAL_SCALE` units,
order-flow imbalance in quantity units) plus prices as the floats `float(Decimal)` gives; every feature is then
a fixed sequence of IEEE-754 operations (+, -, *, /, sqrt, abs: all correctly rounded) written once in
`feature_values` against an `Ops` backend. The streaming engine runs it on Python floats (`PY_OPS`), the batch
engine on polars expressions (`data.features.batch`): the same operations in the same order on the same
operands, so the same bits. Windowed sums are unrolled left to right (lag 0 first), never a library's
pairwise or running sum. A result that would divide by zero is null (None), never inf or NaN.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Generic, Protocol, TypeVar

from shared.domain.types import OrderSide
from shared.marketdata import BookDelta, BookSnapshot, Trade

BAR_SECONDS = 60
BAR_US = BAR_SECONDS * 1_000_000
QTY_SCALE = 10**8  # quantities in units of 1e-8 (Kraken's finest lot)
NOTIONAL_SCALE = 10**6  # price * quantity in units of 1e-6 of the quote currency
DEPTH_LEVELS = 5  # depth imbalance over the top 5 levels per side
RV_HORIZONS = (5, 15, 60)  # realized volatility over 5, 15 and 60 bars
KYLE_WINDOW = 30  # Kyle's lambda regression over 30 bars
HISTORY = max(max(RV_HORIZONS), KYLE_WINDOW) + 1  # bars of history a feature reads (returns need one more)

# The exact per-bar inputs, in the order the engines carry them.
BAR_INPUTS = (
    "trades",
    "buy_qty",
    "sell_qty",
    "notional",
    "close",
    "bid",
    "ask",
    "bid_depth",
    "ask_depth",
    "ofi",
)
FEATURES = (
    "mid",
    "spread",
    "spread_bps",
    "depth_imbalance",
    "ofi",
    "signed_volume",
    "volume",
    "trade_intensity",
    "vwap",
    "vwap_deviation",
    *(f"rv_{h}" for h in RV_HORIZONS),
    "kyle_lambda",
    "amihud",
)


class FeatureInputError(ValueError):
    """A trade or book level that cannot be represented exactly (too many decimals, too large)."""


# --------------------------------------------------------------------------- exact inputs


def bar_of(timestamp_us: int) -> int:
    """The start of the bar holding `timestamp_us` (microseconds since the epoch), in microseconds."""
    return timestamp_us - timestamp_us % BAR_US


def to_us(at: datetime) -> int:
    """Microseconds since the epoch of an aware datetime, exactly (no float)."""
    delta = at - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def scaled(value: Decimal, scale: int, what: str) -> int:
    """`value * scale` as an integer; FeatureInputError when that drops a digit or leaves int64."""
    product = value * scale
    integral = product.to_integral_value(rounding=ROUND_HALF_EVEN)
    if what == "qty" and integral != product:
        raise FeatureInputError(f"{what} {value} has more than 8 decimals")
    if not -(2**62) < integral < 2**62:
        raise FeatureInputError(f"{what} {value} is out of range")
    return int(integral)


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One trade as both engines read it."""

    venue: str
    symbol: str
    ts_us: int
    trade_id: str
    price: float
    qty: int  # QTY_SCALE units
    notional: int  # NOTIONAL_SCALE units, price * qty rounded half-even
    buy: bool


def trade_row(trade: Trade) -> TradeRow:
    """The exact row of a trade (the one conversion both engines use)."""
    return TradeRow(
        venue=trade.venue,
        symbol=trade.symbol,
        ts_us=to_us(trade.timestamp),
        trade_id=trade.trade_id,
        price=float(trade.price),
        qty=scaled(trade.qty, QTY_SCALE, "qty"),
        notional=scaled(trade.price * trade.qty, NOTIONAL_SCALE, "notional"),
        buy=trade.side is OrderSide.BUY,
    )


@dataclass(frozen=True, slots=True)
class BookRow:
    """The top of one book state: best prices, best quantities, depth over `DEPTH_LEVELS` levels."""

    venue: str
    symbol: str
    ts_us: int
    bid: float
    ask: float
    bid_qty: int
    ask_qty: int
    bid_depth: int
    ask_depth: int


def book_row(
    venue: str,
    symbol: str,
    ts_us: int,
    bids: Sequence[tuple[Decimal, Decimal]],
    asks: Sequence[tuple[Decimal, Decimal]],
) -> BookRow | None:
    """The row of a book state from its (price, qty) levels, best first; None when a side is empty."""
    if not bids or not asks:
        return None
    return BookRow(
        venue=venue,
        symbol=symbol,
        ts_us=ts_us,
        bid=float(bids[0][0]),
        ask=float(asks[0][0]),
        bid_qty=scaled(bids[0][1], QTY_SCALE, "qty"),
        ask_qty=scaled(asks[0][1], QTY_SCALE, "qty"),
        bid_depth=sum(scaled(qty, QTY_SCALE, "qty") for _, qty in bids[:DEPTH_LEVELS]),
        ask_depth=sum(scaled(qty, QTY_SCALE, "qty") for _, qty in asks[:DEPTH_LEVELS]),
    )


def ofi_contribution(previous: BookRow | None, current: BookRow) -> int:
    """Cont, Kukanov and Stoikov's e_n between two consecutive book states, in quantity units (0 for the first)."""
    if previous is None:
        return 0
    e = 0
    if current.bid >= previous.bid:
        e += current.bid_qty
    if current.bid <= previous.bid:
        e -= previous.bid_qty
    if current.ask <= previous.ask:
        e -= current.ask_qty
    if current.ask >= previous.ask:
        e += previous.ask_qty
    return e


class BookTracker:
    """Applies BookSnapshot / BookDelta messages of one symbol and gives the state after each one."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}

    def apply(self, message: BookSnapshot | BookDelta) -> BookRow | None:
        """The book state after `message` (None while a side is empty)."""
        if isinstance(message, BookSnapshot):
            self.bids = {level.price: level.qty for level in message.bids}
            self.asks = {level.price: level.qty for level in message.asks}
        else:
            for side, levels in ((self.bids, message.bids), (self.asks, message.asks)):
                for level in levels:
                    if level.qty == 0:
                        side.pop(level.price, None)
                    else:
                        side[level.price] = level.qty
        bids = [(p, self.bids[p]) for p in heapq.nlargest(DEPTH_LEVELS, self.bids)]
        asks = [(p, self.asks[p]) for p in heapq.nsmallest(DEPTH_LEVELS, self.asks)]
        return book_row(message.venue, message.symbol, to_us(message.timestamp), bids, asks)


# --------------------------------------------------------------------------- the definitions

T = TypeVar("T")


class Ops(Protocol, Generic[T]):
    """The arithmetic a definition may use; each operation is one IEEE-754 operation (or an exact int one)."""

    def const(self, value: float) -> T: ...
    def flt(self, value: T) -> T: ...  # exact integer -> nearest float
    def add(self, a: T, b: T) -> T: ...
    def sub(self, a: T, b: T) -> T: ...
    def mul(self, a: T, b: T) -> T: ...
    def div(self, a: T, b: T) -> T: ...  # null when b == 0
    def sqrt(self, a: T) -> T: ...
    def abs(self, a: T) -> T: ...


Get = Callable[[str, int], T]  # (bar input, lag in bars) -> value; lag 0 is the bar itself


def _unrolled_sum(ops: Ops[T], terms: list[T]) -> T:
    total = terms[0]
    for term in terms[1:]:
        total = ops.add(total, term)
    return total


def feature_values(ops: Ops[T], get: Get[T]) -> dict[str, T]:
    """Every feature of the bar at lag 0, from the bar inputs at lags 0..HISTORY-1."""
    one, two, qty_scale = ops.const(1.0), ops.const(2.0), ops.const(float(QTY_SCALE))
    notional_scale = ops.const(float(NOTIONAL_SCALE))

    def mid(lag: int) -> T:
        return ops.div(ops.add(get("bid", lag), get("ask", lag)), two)

    def ret(lag: int) -> T:  # simple return of the mid over bar `lag`
        return ops.sub(ops.div(mid(lag), mid(lag + 1)), one)

    def signed(lag: int) -> T:
        return ops.div(ops.flt(ops.sub(get("buy_qty", lag), get("sell_qty", lag))), qty_scale)

    bid, ask, m = get("bid", 0), get("ask", 0), mid(0)
    volume_units = ops.flt(ops.add(get("buy_qty", 0), get("sell_qty", 0)))
    notional = ops.flt(get("notional", 0))
    # notional / volume in their own units, back to a price: (N / 1e6) / (V / 1e8) = N * 100 / V.
    vwap = ops.div(ops.mul(notional, ops.div(qty_scale, notional_scale)), volume_units)
    bid_depth, ask_depth = ops.flt(get("bid_depth", 0)), ops.flt(get("ask_depth", 0))
    values: dict[str, T] = {
        "mid": m,
        "spread": ops.sub(ask, bid),
        "spread_bps": ops.mul(ops.div(ops.sub(ask, bid), m), ops.const(10_000.0)),
        "depth_imbalance": ops.div(ops.sub(bid_depth, ask_depth), ops.add(bid_depth, ask_depth)),
        "ofi": ops.div(ops.flt(get("ofi", 0)), qty_scale),
        "signed_volume": signed(0),
        "volume": ops.div(volume_units, qty_scale),
        "trade_intensity": ops.div(ops.flt(get("trades", 0)), ops.const(float(BAR_SECONDS))),
        "vwap": vwap,
        "vwap_deviation": ops.div(ops.sub(get("close", 0), vwap), vwap),
    }
    for horizon in RV_HORIZONS:
        values[f"rv_{horizon}"] = ops.sqrt(_unrolled_sum(ops, [ops.mul(ret(k), ret(k)) for k in range(horizon)]))
    xs = [signed(k) for k in range(KYLE_WINDOW)]
    ys = [ops.sub(mid(k), mid(k + 1)) for k in range(KYLE_WINDOW)]
    n = ops.const(float(KYLE_WINDOW))
    sx, sy = _unrolled_sum(ops, xs), _unrolled_sum(ops, ys)
    sxx = _unrolled_sum(ops, [ops.mul(x, x) for x in xs])
    sxy = _unrolled_sum(ops, [ops.mul(x, y) for x, y in zip(xs, ys, strict=True)])
    values["kyle_lambda"] = ops.div(
        ops.sub(ops.mul(n, sxy), ops.mul(sx, sy)), ops.sub(ops.mul(n, sxx), ops.mul(sx, sx))
    )
    values["amihud"] = ops.div(ops.abs(ret(0)), ops.div(notional, notional_scale))
    return values


class _PyOps:
    """`Ops` on Python floats, None for null."""

    def const(self, value: float) -> float | None:
        return value

    def flt(self, value: float | None) -> float | None:
        return None if value is None else float(value)

    def add(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a + b

    def sub(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a - b

    def mul(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None else a * b

    def div(self, a: float | None, b: float | None) -> float | None:
        return None if a is None or b is None or b == 0 else a / b

    def sqrt(self, a: float | None) -> float | None:
        return None if a is None else math.sqrt(a)

    def abs(self, a: float | None) -> float | None:
        return None if a is None else abs(a)


PY_OPS: Ops[float | None] = _PyOps()


def evaluate(history: list[Mapping[str, float | int | None]]) -> dict[str, float | None]:
    """The features of `history[0]` (the newest bar; older bars follow, missing ones read as null)."""

    def get(name: str, lag: int) -> float | None:
        if lag >= len(history):
            return None
        return history[lag][name]

    return feature_values(PY_OPS, get)
