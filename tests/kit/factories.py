"""Factories for what tests build again and again: account ids, books, orders."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.clock import utc_now
from shared.domain.types import OrderSide
from shared.marketdata import BookSnapshot, Level, Trade

SYMBOL = "BTC/USD"
# The default market: one deep level each side around 100, enough that small orders never exhaust it.
BIDS: tuple[tuple[str, str], ...] = (("99.9", "50"),)
ASKS: tuple[tuple[str, str], ...] = (("100", "50"),)

Levels = Sequence[tuple[str, str]]


def new_id(prefix: str) -> str:
    """`prefix` and 8 random hex digits: an id no other test (or run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def account_id(prefix: str = "acct") -> str:
    """A fresh account id."""
    return new_id(prefix)


def book_snapshot(
    symbol: str = SYMBOL,
    bids: Levels = BIDS,
    asks: Levels = ASKS,
    *,
    sequence: int = 1,
    at: datetime | None = None,
) -> BookSnapshot:
    """A whole book as the market-data feed publishes it."""
    return BookSnapshot(
        venue="test",
        symbol=symbol,
        bids=[Level(price=Decimal(price), qty=Decimal(qty)) for price, qty in bids],
        asks=[Level(price=Decimal(price), qty=Decimal(qty)) for price, qty in asks],
        timestamp=at or utc_now(),
        sequence=sequence,
    )


def book_dict(bids: Levels = BIDS, asks: Levels = ASKS) -> dict[str, Any]:
    """A book as the paper feed caches it in Redis (`marketdata:book:{symbol}`), without the timestamp."""
    return {
        "bids": [{"price": price, "qty": qty} for price, qty in bids],
        "asks": [{"price": price, "qty": qty} for price, qty in asks],
    }


def trade(
    price: str, qty: str = "0.01", *, side: str = "sell", symbol: str = SYMBOL, at: datetime | None = None
) -> Trade:
    """A public trade print with a fresh trade id (`side` is the aggressor's)."""
    return Trade(
        venue="test",
        symbol=symbol,
        trade_id=new_id("t"),
        price=Decimal(price),
        qty=Decimal(qty),
        side=OrderSide(side),
        timestamp=at or utc_now(),
    )


def order(
    account: str,
    *,
    side: str = "buy",
    type: str = "market",
    quantity: str = "1",
    symbol: str = SYMBOL,
    client_order_id: str | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """A `POST /orders` body; extra fields (`limit_price`, `exits`...) are passed through."""
    return {
        "account_id": account,
        "client_order_id": client_order_id or new_id("c"),
        "symbol": symbol,
        "side": side,
        "type": type,
        "quantity": quantity,
        **fields,
    }
