"""Normalized market-data messages, as the Kraken WebSocket v2 feed and the replay both publish them.

Field names follow Kraken v2 (`symbol` like "BTC/USD", levels of `price`/`qty`, trades with `side`,
`ord_type`, `trade_id`, `timestamp`), with prices and quantities as decimal strings. They travel inside the
platform envelope on `marketdata.book-events.v1` (BookSnapshot, BookDelta) and
`marketdata.trade-events.v1` (TradePrinted), keyed by symbol so one symbol's messages keep their order.

Invariants a consumer may rely on: prices are positive; a snapshot lists bids best (highest) first and
asks best (lowest) first, each price once, every quantity positive, and is never crossed; a delta lists
each changed price once per side, with `qty` "0" meaning "remove the level"; a trade has a positive
quantity and `side` is the aggressor's.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.domain.money import DecimalString
from shared.domain.types import OrderSide
from shared.events.envelope import Envelope

BOOK_TOPIC = "marketdata.book-events.v1"
TRADE_TOPIC = "marketdata.trade-events.v1"

SymbolText = Annotated[str, Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$", max_length=32)]
VenueName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]


class MarketDataError(ValueError):
    """A market-data message that cannot be decoded or violates the schema."""


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
            raise ValueError(f"crossed book: best bid {self.bids[0].price} >= best ask {self.asks[0].price}")
        return self


class BookDelta(BaseModel):
    """Changed levels; a `qty` of "0" removes the level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

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
    """One public trade; `side` is the aggressor's side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    venue: VenueName
    symbol: SymbolText
    trade_id: str = Field(min_length=1, max_length=64)
    price: PositiveDecimal
    qty: PositiveDecimal
    side: OrderSide
    ord_type: Literal["market", "limit"] = "market"
    timestamp: AwareDatetime


MarketData = BookSnapshot | BookDelta | Trade

_TYPES: dict[str, type[BookSnapshot] | type[BookDelta] | type[Trade]] = {
    "BookSnapshot": BookSnapshot,
    "BookDelta": BookDelta,
    "TradePrinted": Trade,
}


def envelope_type(message: MarketData) -> str:
    """The envelope `type` of a message: BookSnapshot, BookDelta or TradePrinted."""
    return "TradePrinted" if isinstance(message, Trade) else type(message).__name__


def topic_for(message: MarketData) -> str:
    """The default topic of a message (book or trade events)."""
    return TRADE_TOPIC if isinstance(message, Trade) else BOOK_TOPIC


def to_envelope(message: MarketData, producer: str, *, correlation_id: str | None = None) -> Envelope:
    """Wrap a message in the platform envelope (aggregate = symbol, occurred_at = the message's time)."""
    return Envelope.new(
        type=envelope_type(message),
        producer=producer,
        aggregate_id=message.symbol,
        payload=message.model_dump(mode="json"),
        now=message.timestamp,
        correlation_id=correlation_id,
    )


def decode_marketdata(envelope: Envelope) -> MarketData:
    """The typed message inside an envelope; MarketDataError for an unknown type or a payload that breaks the schema."""
    model = _TYPES.get(envelope.type)
    if model is None:
        raise MarketDataError(f"not a market-data message: {envelope.type!r}")
    try:
        message = model.model_validate(envelope.payload)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        location = ".".join(str(part) for part in first["loc"]) or "<root>"
        raise MarketDataError(
            f"{envelope.type} {envelope.event_id}: {exc.error_count()} error(s): "
            f"{location}: {first['msg'].removeprefix('Value error, ')}"
        ) from None
    if message.symbol != envelope.aggregate_id:
        raise MarketDataError(
            f"{envelope.type} {envelope.event_id}: symbol {message.symbol!r} != aggregate id {envelope.aggregate_id!r}"
        )
    return message
