"""Identifiers and enumerations shared by the trading domain."""

from __future__ import annotations

from enum import StrEnum
from typing import NewType

OrderId = NewType("OrderId", str)
ClientOrderId = NewType("ClientOrderId", str)
AccountId = NewType("AccountId", str)
VenueOrderId = NewType("VenueOrderId", str)
TradeId = NewType("TradeId", str)
Symbol = NewType("Symbol", str)  # "BTC/USD": base/quote, as Kraken WS v2 spells it
Asset = NewType("Asset", str)  # "BTC", "USD"


class OrderSide(StrEnum):
    BUY = "buy"
    SELL = "sell"


class OrderType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"
    STOP_LOSS = "stop-loss"  # trigger, then market
    TAKE_PROFIT = "take-profit"  # trigger, then market
    STOP_LOSS_LIMIT = "stop-loss-limit"  # trigger, then limit


class TimeInForce(StrEnum):
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class OrderStatus(StrEnum):
    INITIALIZED = "initialized"
    DENIED = "denied"
    PENDING_APPROVAL = "pending_approval"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    PENDING_CANCEL = "pending_cancel"
    CANCELED = "canceled"
    EXPIRED = "expired"


TERMINAL_STATUSES = frozenset(
    {OrderStatus.DENIED, OrderStatus.REJECTED, OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.EXPIRED}
)


class Liquidity(StrEnum):
    MAKER = "maker"
    TAKER = "taker"


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"  # only exposure-reducing orders
    HALTED = "halted"  # new orders denied, cancels pass
