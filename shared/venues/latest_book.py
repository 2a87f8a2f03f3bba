"""The latest book of each symbol in Redis: written by the paper feed, read by the OMS. One format, both ways.

Key `marketdata:book:{symbol}`, value JSON with decimal strings:
{"symbol", "bids": [{"price", "qty"}], "asks": [...], "updated_at"}, best levels first.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.domain.book import OrderBook
from shared.domain.money import format_decimal
from shared.domain.types import OrderSide, Symbol
from shared.venues.base import BookLevel, LatestBookUnavailable, LatestBookView

BOOK_KEY = "marketdata:book:{symbol}"
BOOK_DEPTH = 10


def book_key(symbol: str) -> str:
    return BOOK_KEY.format(symbol=symbol)


def book_json(book: OrderBook, depth: int = BOOK_DEPTH) -> str:
    """The top `depth` levels per side as JSON: {"symbol", "bids": [{"price", "qty"}], "asks", "updated_at"}."""
    return json.dumps(
        {
            "symbol": book.symbol,
            "bids": [_level(price, qty) for price, qty in book.levels(OrderSide.BUY, depth)],
            "asks": [_level(price, qty) for price, qty in book.levels(OrderSide.SELL, depth)],
            "updated_at": None if book.updated_at is None else book.updated_at.isoformat(),
        }
    )


def parse_book(symbol: str, raw: bytes | str) -> LatestBookView:
    """The cached value back as a typed view; an unreadable value is `LatestBookUnavailable`, never an empty book."""
    try:
        value = json.loads(raw)
        updated_at = value.get("updated_at")
        return LatestBookView(
            symbol=Symbol(str(value.get("symbol") or symbol)),
            bids=_levels(value.get("bids") or []),
            asks=_levels(value.get("asks") or []),
            updated_at=None if updated_at is None else datetime.fromisoformat(updated_at),
        )
    except (ValueError, TypeError, KeyError, AttributeError, InvalidOperation) as exc:
        raise LatestBookUnavailable(f"latest book of {symbol} is unreadable: {type(exc).__name__}") from None


class RedisLatestBook:
    """`LatestBook` over the paper feed's Redis cache."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, symbol: Symbol) -> LatestBookView | None:
        try:
            raw: bytes | str | None = await self.redis.get(book_key(symbol))
        except RedisError as exc:
            raise LatestBookUnavailable(f"latest book unavailable: {type(exc).__name__}") from None
        return None if raw is None else parse_book(symbol, raw)


def _level(price: Any, qty: Any) -> dict[str, str]:
    return {"price": format_decimal(price), "qty": format_decimal(qty)}


def _levels(rows: list[dict[str, Any]]) -> tuple[BookLevel, ...]:
    return tuple(BookLevel(Decimal(row["price"]), Decimal(row["qty"])) for row in rows)
