"""Market-data messages (`marketdata.book-events.v1`: BookSnapshot, BookDelta; `marketdata.trade-events.v1`:
TradePrinted) and the latest book and trade the paper feed caches in Redis (`marketdata:book:<symbol>`,
`marketdata:trade:<symbol>`).

Field names follow Kraken v2 (`symbol` like "BTC/USD", levels of `price`/`qty`, trades with `side`,
`ord_type`, `trade_id`, `timestamp`), with prices and quantities as decimal strings. Invariants a consumer may
rely on: prices are positive; a snapshot lists bids best (highest) first and asks best (lowest) first, each price
once, every quantity positive, and is never crossed; a delta lists each changed price once per side, with `qty`
"0" meaning "remove the level"; a trade has a positive quantity and `side` is the aggressor's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, ClassVar, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.contracts.base import MirrorValue, Timestamp
from shared.domain.money import DecimalString
from shared.domain.types import OrderSide

SymbolText = Annotated[str, Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$", max_length=32)]
VenueName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
# Every refusal of a crossed book starts so: the sink's quarantine reasons, and the anomaly scan that reads them.
CROSSED_BOOK = "crossed book"


def crossed_book_reason(best_bid: Decimal, best_ask: Decimal) -> str:
    """Why a book is refused: its best bid is at or above its best ask."""
    return f"{CROSSED_BOOK}: best bid {best_bid} >= best ask {best_ask}"


def _positive(value: Decimal) -> Decimal:
    if value <= 0:
        raise ValueError("must be positive")
    return value


def _not_negative(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError("must not be negative")
    return value


PositiveDecimal = Annotated[DecimalString, AfterValidator(_positive)]
NonNegativeDecimal = Annotated[DecimalString, AfterValidator(_not_negative)]


class Level(BaseModel):
    """One aggregated price level; in a delta a `qty` of 0 removes it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price: PositiveDecimal
    qty: NonNegativeDecimal


def _check_unique(side: str, levels: list[Level]) -> None:
    prices = [level.price for level in levels]
    if len(set(prices)) != len(prices):
        raise ValueError(f"{side}: a price appears more than once")


class BookSnapshot(BaseModel):
    """The full visible book (top N levels per side); replaces what the reader had."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str] = "BookSnapshot"
    SCHEMA_VERSION: ClassVar[int] = 1

    venue: VenueName
    symbol: SymbolText
    bids: list[Level]
    asks: list[Level]
    checksum: int | None = None
    timestamp: AwareDatetime
    sequence: int = Field(ge=0)

    @model_validator(mode="after")
    def _well_formed(self) -> Self:
        for side, levels, descending in (("bids", self.bids, True), ("asks", self.asks, False)):
            if any(level.qty == 0 for level in levels):
                raise ValueError(f"{side}: a snapshot level needs a positive qty")
            prices = [level.price for level in levels]
            if prices != sorted(set(prices), reverse=descending):
                raise ValueError(f"{side}: levels must be unique and best first")
        if self.bids and self.asks and self.bids[0].price >= self.asks[0].price:
            raise ValueError(crossed_book_reason(self.bids[0].price, self.asks[0].price))
        return self


class BookDelta(BaseModel):
    """Changed levels; a `qty` of "0" removes the level."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str] = "BookDelta"
    SCHEMA_VERSION: ClassVar[int] = 1

    venue: VenueName
    symbol: SymbolText
    bids: list[Level] = Field(default_factory=list)
    asks: list[Level] = Field(default_factory=list)
    checksum: int | None = None
    timestamp: AwareDatetime
    sequence: int = Field(ge=0)

    @model_validator(mode="after")
    def _unique_prices(self) -> Self:
        _check_unique("bids", self.bids)
        _check_unique("asks", self.asks)
        return self


class Trade(BaseModel):
    """One public trade (envelope type `TradePrinted`; also the `marketdata:trade:<symbol>` value); `side` is
    the aggressor's side."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    TYPE: ClassVar[str] = "TradePrinted"
    SCHEMA_VERSION: ClassVar[int] = 1

    venue: VenueName
    symbol: SymbolText
    trade_id: str = Field(min_length=1, max_length=64)
    price: PositiveDecimal
    qty: PositiveDecimal
    side: OrderSide
    ord_type: Literal["market", "limit"] = "market"
    timestamp: AwareDatetime


MarketData = BookSnapshot | BookDelta | Trade


class LatestBook(MirrorValue):
    """`marketdata:book:<symbol>`: the top levels per side, best first, as the paper feed last saw them."""

    symbol: SymbolText
    bids: list[Level]
    asks: list[Level]
    updated_at: Timestamp | None = None

    def to_mirror(self) -> str:
        """JSON in field order (symbol, bids, asks, updated_at), as the paper feed has always written it."""
        return self.model_dump_json()

    def mid(self) -> Decimal | None:
        """(best bid + best ask) / 2, one side alone when the other is empty, None for an empty book."""
        bests = [side[0].price for side in (self.bids, self.asks) if side]
        if not bests:
            return None
        return sum(bests, Decimal(0)) / len(bests)

    def sweep_price(self, side: OrderSide, quantity: Decimal) -> Decimal | None:
        """The worst price a market order of `quantity` on `side` reaches in this book (None: the side is empty);
        when the book is too thin, the last level's price."""
        remaining, worst = quantity, None
        for level in self.asks if side is OrderSide.BUY else self.bids:
            worst = level.price
            remaining -= level.qty
            if remaining <= 0:
                break
        return worst
