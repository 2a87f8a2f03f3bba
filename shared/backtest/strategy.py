"""The strategy interface shared by the backtester and (later) live strategy workers.

A strategy reacts to market data (`on_book`, `on_trade`, `on_bar`) and to its own orders (`on_order`, `on_fill`)
and acts only through its `StrategyContext`: `submit`, `cancel`, `position`, `balance`. The context is a protocol:
the backtester's context is one implementation; a live worker implements the same protocol by sending
`oms.commands.v1` SubmitOrder/CancelOrder commands, so the same strategy class runs in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import ClassVar, Protocol

from shared.backtest.bars import BacktestInputError, Bar
from shared.domain.book import OrderBook
from shared.domain.types import Liquidity, OrderSide, OrderType, TimeInForce
from shared.marketdata import Trade


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """A change of one of the strategy's orders: accepted, rejected, denied (limits), canceled, triggered, filled, or
    cancel_rejected (a cancel that reached the venue before its order: the order stays open)."""

    order_id: str
    symbol: str
    status: str
    at: datetime
    leaves: Decimal | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Fill:
    """One fill of one of the strategy's orders, with its fee in quote."""

    order_id: str
    trade_id: str
    symbol: str
    side: OrderSide
    quantity: Decimal
    price: Decimal
    fee: Decimal
    liquidity: Liquidity
    at: datetime


class StrategyContext(Protocol):
    """What a strategy may do and read; implemented by the backtester and by a live strategy worker."""

    @property
    def now(self) -> datetime:
        """The time of the event being handled."""
        ...

    def submit(
        self,
        symbol: str,
        side: OrderSide,
        quantity: Decimal,
        *,
        type: OrderType = OrderType.MARKET,
        limit_price: Decimal | None = None,
        trigger_price: Decimal | None = None,
        time_in_force: TimeInForce = TimeInForce.GTC,
        post_only: bool = False,
    ) -> str:
        """Send a new order; returns its id (its outcome arrives through `on_order` / `on_fill`)."""
        ...

    def cancel(self, order_id: str) -> None:
        """Ask to cancel an open order (the outcome arrives through `on_order`)."""
        ...

    def position(self, symbol: str) -> Decimal:
        """Base quantity held in `symbol`."""
        ...

    def balance(self, asset: str) -> Decimal:
        """Total balance of `asset` (reserved part included)."""
        ...

    def book(self, symbol: str) -> OrderBook | None:
        """The latest order book of `symbol` (None before any)."""
        ...


@dataclass(frozen=True, slots=True)
class Param:
    """A declared strategy parameter: its default and the closed range it must lie in."""

    default: Decimal
    minimum: Decimal
    maximum: Decimal
    integer: bool = False


class Strategy:
    """Base class: override the callbacks you need; `params` declares the tunable parameters."""

    name: ClassVar[str] = "strategy"
    params: ClassVar[Mapping[str, Param]] = {}

    def __init__(self, **values: Decimal) -> None:
        self.values: dict[str, Decimal] = {name: param.default for name, param in self.params.items()}
        self.values.update(values)

    def on_start(self, ctx: StrategyContext) -> None:
        """Called once before the first event."""

    def on_book(self, ctx: StrategyContext, book: OrderBook) -> None:
        """Called after a book snapshot or delta of `book.symbol`."""

    def on_trade(self, ctx: StrategyContext, trade: Trade) -> None:
        """Called after a public trade print."""

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        """Called at the end of a bar (never earlier)."""

    def on_fill(self, ctx: StrategyContext, fill: Fill) -> None:
        """Called for each fill of one of this strategy's orders."""

    def on_order(self, ctx: StrategyContext, update: OrderUpdate) -> None:
        """Called when one of this strategy's orders changes status."""


def parse_params(strategy: type[Strategy], given: Mapping[str, str]) -> dict[str, Decimal]:
    """Parameter texts checked against the strategy's declarations; `BacktestInputError` names the bad one."""
    return check_params(strategy.name, strategy.params, given)


def check_params(owner: str, declared: Mapping[str, Param], given: Mapping[str, str]) -> dict[str, Decimal]:
    """Parameter texts checked against `declared` (a strategy's or a scenario's); `BacktestInputError` names the bad one."""
    values: dict[str, Decimal] = {}
    for name, text in given.items():
        param = declared.get(name)
        if param is None:
            known = ", ".join(sorted(declared)) or "none"
            raise BacktestInputError(f"{owner}: unknown parameter {name!r} (known: {known})")
        try:
            value = Decimal(text)
        except InvalidOperation:
            raise BacktestInputError(f"{owner}: parameter {name}={text!r} is not a number") from None
        if not value.is_finite() or not param.minimum <= value <= param.maximum:
            raise BacktestInputError(
                f"{owner}: parameter {name}={text} is outside its range [{param.minimum}, {param.maximum}]"
            )
        if param.integer and value != value.to_integral_value():
            raise BacktestInputError(f"{owner}: parameter {name}={text} must be an integer")
        values[name] = value
    return values
