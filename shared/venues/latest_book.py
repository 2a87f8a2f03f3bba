"""The latest book of each symbol in Redis: written by the paper feed, read by the OMS, both through the
`LatestBook` mirror value of `shared/contracts/marketdata.py` (key `marketdata:book:<symbol>`)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.contracts.base import ContractViolation
from shared.contracts.marketdata import LatestBook as LatestBookValue
from shared.contracts.marketdata import Level
from shared.contracts.mirror import decode_mirror, encode_mirror
from shared.domain.book import OrderBook
from shared.domain.types import OrderSide, Symbol
from shared.mirror_keys import latest_book_key
from shared.venues.base import BookLevel, LatestBookUnavailable, LatestBookView

BOOK_KEY = latest_book_key("{symbol}")
BOOK_DEPTH = 10


def book_key(symbol: str) -> str:
    """The Redis key of a symbol's latest book."""
    return latest_book_key(symbol)


def latest_book_value(book: OrderBook, depth: int = BOOK_DEPTH) -> LatestBookValue:
    """The top `depth` levels per side of `book`, best first, as the mirror value."""
    return LatestBookValue(
        symbol=book.symbol,
        bids=[Level(price=price, qty=qty) for price, qty in book.levels(OrderSide.BUY, depth)],
        asks=[Level(price=price, qty=qty) for price, qty in book.levels(OrderSide.SELL, depth)],
        updated_at=book.updated_at,
    )


def book_json(book: OrderBook, depth: int = BOOK_DEPTH) -> str:
    """The Redis value of `book`'s top `depth` levels (what the paper feed writes)."""
    return encode_mirror(latest_book_value(book, depth))


def book_view(value: LatestBookValue) -> LatestBookView:
    """The mirror value as the typed view the pre-trade chain reads."""
    return LatestBookView(
        symbol=Symbol(value.symbol),
        bids=tuple(BookLevel(level.price, level.qty) for level in value.bids),
        asks=tuple(BookLevel(level.price, level.qty) for level in value.asks),
        updated_at=value.updated_at,
    )


class RedisLatestBook:
    """`LatestBook` over the paper feed's Redis cache."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, symbol: Symbol) -> LatestBookView | None:
        """The latest book, None when none was published; unreachable or unreadable is `LatestBookUnavailable`."""
        try:
            raw: bytes | str | None = await self.redis.get(book_key(symbol))
        except RedisError as exc:
            raise LatestBookUnavailable(f"latest book unavailable: {type(exc).__name__}") from None
        if raw is None:
            return None
        try:
            return book_view(decode_mirror(LatestBookValue, raw))
        except ContractViolation as exc:  # never an empty book
            raise LatestBookUnavailable(f"latest book of {symbol} is unreadable: {exc.reason}") from None
