"""Pre-trade risk limits of one account and the check that finds the first one an order breaks (pure).

Exposure-increasing orders (buys, and sells larger than the held position) meet every limit. Exposure-reducing
orders (a sell of at most the held quantity) meet only the price collar: an exit or a de-risking sell must never
be trapped by an allow-list change, the open-order cap or the daily loss limit.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from shared.domain.ledger import Position
from shared.domain.money import MONEY_CONTEXT, format_decimal
from shared.domain.types import OrderSide, Symbol

ZERO = Decimal(0)
HUNDRED = Decimal(100)


@dataclass(frozen=True, slots=True)
class RiskLimits:
    """An account's limits; None means "no limit" for that dimension."""

    max_order_notional: Decimal | None = None
    max_position_notional: Decimal | None = None  # default for every instrument
    max_position_notional_by_symbol: Mapping[str, Decimal] = field(default_factory=dict)  # overrides
    max_open_orders: int | None = None
    daily_loss_limit: Decimal | None = None  # realized loss since 00:00 UTC, quote currency
    price_collar_pct: Decimal | None = None  # a limit price at most this many % away from mid
    allowed_symbols: frozenset[str] | None = None  # None: every instrument
    require_explicit_exits: bool = False

    def position_limit(self, symbol: str) -> Decimal | None:
        """The position notional cap of `symbol`: its override, else the default."""
        return self.max_position_notional_by_symbol.get(symbol, self.max_position_notional)

    def contradictions(self) -> list[tuple[str, str]]:
        """(field, sentence) for every value that cannot be a limit (negative, zero where it blocks everything)."""
        problems: list[tuple[str, str]] = []
        positive = {
            "max_order_notional": self.max_order_notional,
            "max_position_notional": self.max_position_notional,
            "daily_loss_limit": self.daily_loss_limit,
            "price_collar_pct": self.price_collar_pct,
        }
        for name, value in positive.items():
            if value is not None and value <= 0:
                problems.append((name, f"{name} must be positive (or null for no limit)"))
        for symbol, value in sorted(self.max_position_notional_by_symbol.items()):
            if value <= 0:
                problems.append((f"max_position_notional_by_symbol.{symbol}", "a position cap must be positive"))
        if self.max_open_orders is not None and self.max_open_orders < 0:
            problems.append(("max_open_orders", "max_open_orders must not be negative"))
        if self.price_collar_pct is not None and self.price_collar_pct >= HUNDRED:
            problems.append(("price_collar_pct", "price_collar_pct must be below 100"))
        problems.extend(self._caps_that_contradict())
        return problems

    def _caps_that_contradict(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.allowed_symbols is not None:
            for symbol in sorted(self.max_position_notional_by_symbol):
                if symbol not in self.allowed_symbols:
                    problems.append(
                        (f"max_position_notional_by_symbol.{symbol}", f"{symbol} is not in allowed_symbols")
                    )
        return problems


@dataclass(frozen=True, slots=True)
class OrderToCheck:
    """What the limits look at in a new order."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    limit_price: Decimal | None
    has_exits: bool


@dataclass(frozen=True, slots=True)
class Exposure:
    """The account's situation when the order arrives.

    `position_quantity`: base held in the symbol; `position_notional`: what the account holds or may soon hold in
    the symbol, valued in quote (held quantity plus open buys); `realized_loss_today`: positive number = loss.
    """

    mid_price: Decimal | None
    position_quantity: Decimal
    position_notional: Decimal
    open_orders: int
    realized_loss_today: Decimal


@dataclass(frozen=True, slots=True)
class LimitViolation:
    """The first limit an order breaks: a machine-readable code and a sentence for people."""

    code: str
    sentence: str


def is_reducing(order: OrderToCheck, position_quantity: Decimal) -> bool:
    """True for a sell of at most the held quantity (it can only lower exposure)."""
    return order.side is OrderSide.SELL and order.quantity <= position_quantity


def check_order(limits: RiskLimits, order: OrderToCheck, exposure: Exposure) -> LimitViolation | None:
    """The first violated limit, in a fixed order; None when the order passes them all."""
    collar = _collar(limits, order, exposure.mid_price)
    if is_reducing(order, exposure.position_quantity):
        return collar
    for check in (_allow_list(limits, order), _exits(limits, order), _open_orders(limits, exposure)):
        if check is not None:
            return check
    loss = _daily_loss(limits, exposure)
    if loss is not None or collar is not None:
        return loss or collar
    return _notional(limits, order, exposure)


def _allow_list(limits: RiskLimits, order: OrderToCheck) -> LimitViolation | None:
    if limits.allowed_symbols is not None and order.symbol not in limits.allowed_symbols:
        return LimitViolation("symbol_not_allowed", f"{order.symbol} is not in this account's allowed instruments")
    return None


def _exits(limits: RiskLimits, order: OrderToCheck) -> LimitViolation | None:
    if limits.require_explicit_exits and order.side is OrderSide.BUY and not order.has_exits:
        return LimitViolation("exits_required", "this account requires explicit exits (stop-loss/take-profit) on buys")
    return None


def _open_orders(limits: RiskLimits, exposure: Exposure) -> LimitViolation | None:
    if limits.max_open_orders is not None and exposure.open_orders >= limits.max_open_orders:
        return LimitViolation(
            "max_open_orders", f"{exposure.open_orders} open orders: the limit is {limits.max_open_orders}"
        )
    return None


def _daily_loss(limits: RiskLimits, exposure: Exposure) -> LimitViolation | None:
    if limits.daily_loss_limit is not None and exposure.realized_loss_today >= limits.daily_loss_limit:
        return LimitViolation(
            "daily_loss_limit",
            f"realized loss today {format_decimal(exposure.realized_loss_today)} reached the daily limit "
            f"{format_decimal(limits.daily_loss_limit)}",
        )
    return None


def _collar(limits: RiskLimits, order: OrderToCheck, mid: Decimal | None) -> LimitViolation | None:
    if limits.price_collar_pct is None or order.limit_price is None:
        return None
    if mid is None or mid <= 0:
        return LimitViolation("no_market_data", f"no mid price for {order.symbol}: the price collar cannot be checked")
    distance_pct = MONEY_CONTEXT.divide(abs(order.limit_price - mid) * HUNDRED, mid)
    if distance_pct > limits.price_collar_pct:
        return LimitViolation(
            "price_collar",
            f"limit price {format_decimal(order.limit_price)} is more than "
            f"{format_decimal(limits.price_collar_pct)} % away from mid {format_decimal(mid)}",
        )
    return None


def _notional(limits: RiskLimits, order: OrderToCheck, exposure: Exposure) -> LimitViolation | None:
    position_cap = limits.position_limit(order.symbol)
    if limits.max_order_notional is None and position_cap is None:
        return None
    price = order.limit_price if order.limit_price is not None else exposure.mid_price
    if price is None:
        return LimitViolation("no_market_data", f"no price for {order.symbol}: the notional limits cannot be checked")
    notional = order.quantity * price
    if limits.max_order_notional is not None and notional > limits.max_order_notional:
        return LimitViolation(
            "max_order_notional",
            f"order notional {format_decimal(notional)} exceeds the limit {format_decimal(limits.max_order_notional)}",
        )
    projected = exposure.position_notional + (notional if order.side is OrderSide.BUY else ZERO)
    if position_cap is not None and projected > position_cap:
        return LimitViolation(
            "max_position_notional",
            f"position in {order.symbol} would reach {format_decimal(projected)}: the limit is "
            f"{format_decimal(position_cap)}",
        )
    return None


@dataclass(frozen=True, slots=True)
class FillRecord:
    """A fill as the daily loss replay needs it (fee in quote)."""

    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    filled_at: datetime


def realized_pnl_since(fills: Iterable[FillRecord], since: datetime) -> Decimal:
    """Realized PnL of the fills at or after `since`, replaying every fill (oldest first) at average cost.

    The same arithmetic as the ledger's positions (buy fees in the cost, sell fees realized), so the figure
    matches `positions.realized_pnl` when `since` is before the first fill.
    """
    positions: dict[str, Position] = {}
    realized = ZERO
    for fill in fills:
        position = positions.get(fill.symbol, Position(Symbol(fill.symbol)))
        notional = fill.quantity * fill.price  # the booked cost or proceeds (before the venue's rounding)
        if fill.side is OrderSide.BUY:
            after = position.after_buy(fill.quantity, notional, fill.fee)
        else:
            after = position.after_sell(fill.quantity, notional, fill.fee)
        if fill.filled_at >= since:
            realized += after.realized_pnl - position.realized_pnl
        positions[fill.symbol] = after
    return realized


def realized_loss_since(fills: Iterable[FillRecord], since: datetime) -> Decimal:
    """The realized loss (a positive number, 0 for a gain) of the fills at or after `since`."""
    return max(ZERO, -realized_pnl_since(fills, since))


def _decimal_or_none(value: object) -> Decimal | None:
    return None if value is None else Decimal(str(value))


def limits_to_json(limits: RiskLimits) -> dict[str, object]:
    """The wire form (decimals as strings) stored in `risk.limits.values` and mirrored to Redis."""

    def text(value: Decimal | None) -> str | None:
        return None if value is None else format_decimal(value)

    return {
        "max_order_notional": text(limits.max_order_notional),
        "max_position_notional": text(limits.max_position_notional),
        "max_position_notional_by_symbol": {
            symbol: format_decimal(value) for symbol, value in sorted(limits.max_position_notional_by_symbol.items())
        },
        "max_open_orders": limits.max_open_orders,
        "daily_loss_limit": text(limits.daily_loss_limit),
        "price_collar_pct": text(limits.price_collar_pct),
        "allowed_symbols": None if limits.allowed_symbols is None else sorted(limits.allowed_symbols),
        "require_explicit_exits": limits.require_explicit_exits,
    }


def limits_from_json(data: Mapping[str, object]) -> RiskLimits:
    """Inverse of `limits_to_json`; keys that are absent mean "no limit"."""
    by_symbol = data.get("max_position_notional_by_symbol") or {}
    allowed = data.get("allowed_symbols")
    open_orders = data.get("max_open_orders")
    return RiskLimits(
        max_order_notional=_decimal_or_none(data.get("max_order_notional")),
        max_position_notional=_decimal_or_none(data.get("max_position_notional")),
        max_position_notional_by_symbol={
            str(symbol): Decimal(str(value))
            for symbol, value in dict(by_symbol).items()  # type: ignore[call-overload]
        },
        max_open_orders=None if open_orders is None else int(str(open_orders)),
        daily_loss_limit=_decimal_or_none(data.get("daily_loss_limit")),
        price_collar_pct=_decimal_or_none(data.get("price_collar_pct")),
        allowed_symbols=None if allowed is None else frozenset(str(s) for s in allowed),  # type: ignore[attr-defined]
        require_explicit_exits=bool(data.get("require_explicit_exits", False)),
    )


def _looser(current: Decimal | int | None, proposed: Decimal | int | None) -> bool:
    # None is "no limit": removing a limit, or a larger one, is looser.
    return current is not None and (proposed is None or proposed > current)


def raised_limits(current: RiskLimits | None, proposed: RiskLimits) -> list[str]:
    """The limits `proposed` makes looser than `current` (None: no limits were in force, nothing is raised)."""
    if current is None:
        return []
    raised = [
        name
        for name in ("max_order_notional", "max_position_notional", "max_open_orders", "daily_loss_limit")
        if _looser(getattr(current, name), getattr(proposed, name))
    ]
    if current.price_collar_pct is not None and _looser(current.price_collar_pct, proposed.price_collar_pct):
        raised.append("price_collar_pct")
    if any(
        _looser(current.position_limit(symbol), proposed.position_limit(symbol))
        for symbol in current.max_position_notional_by_symbol
    ):
        raised.append("max_position_notional_by_symbol")
    if current.allowed_symbols is not None and (
        proposed.allowed_symbols is None or not proposed.allowed_symbols <= current.allowed_symbols
    ):
        raised.append("allowed_symbols")
    if current.require_explicit_exits and not proposed.require_explicit_exits:
        raised.append("require_explicit_exits")
    return raised
