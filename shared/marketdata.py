"""Normalized market-data messages, as the Kraken WebSocket v2 feed and the replay both publish them.

Field names follow Kraken v2 (`symbol` like "BTC/USD", levels of `price`/`qty`, trades with `side`,
`trade_id`, `timestamp`), with prices and quantities as decimal strings. They travel inside the
platform envelope on `marketdata.book-events.v1` (BookSnapshot, BookDelta) and
`marketdata.trade-events.v1` (TradePrinted), keyed by symbol so one symbol's messages keep their order.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from shared.domain.money import DecimalString
from shared.events.envelope import Envelope

BOOK_TOPIC = "marketdata.book-events.v1"
TRADE_TOPIC = "marketdata.trade-events.v1"

SymbolText = Annotated[str, Field(pattern=r"^[A-Z0-9]+/[A-Z0-9]+$", max_length=32)]
Price = Annotated[DecimalString, Field(gt=0)]
Quantity = Annotated[DecimalString, Field(ge=0)]


class MarketDataError(ValueError):
    """A market-data message that cannot be decoded or violates the schema."""


class Level(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    price: Price
    qty: Quantity


class BookSnapshot(BaseModel):
    """The full visible book (top N levels per side); replaces what the reader had."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    venue: str
    symbol: SymbolText
    bids: list[Level]
    asks: list[Level]
    checksum: int | None = None
    timestamp: AwareDatetime
    sequence: int = Field(ge=0)


class BookDelta(BaseModel):
    """Changed levels; a `qty` of "0" removes the level."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    venue: str
    symbol: SymbolText
    bids: list[Level] = Field(default_factory=list)
    asks: list[Level] = Field(default_factory=list)
    checksum: int | None = None
    timestamp: AwareDatetime
    sequence: int = Field(ge=0)


class Trade(BaseModel):
    """One public trade; `side` is the aggressor's side."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    venue: str
    symbol: SymbolText
    trade_id: str = Field(min_length=1, max_length=64)
    price: Price
    qty: Annotated[DecimalString, Field(gt=0)]
    side: Literal["buy", "sell"]
    ord_type: Literal["market", "limit"] = "market"
    timestamp: AwareDatetime


MarketData = BookSnapshot | BookDelta | Trade

_TYPES: dict[str, type[BookSnapshot] | type[BookDelta] | type[Trade]] = {
    "BookSnapshot": BookSnapshot,
    "BookDelta": BookDelta,
    "TradePrinted": Trade,
}


def envelope_type(message: MarketData) -> str:
    return "TradePrinted" if isinstance(message, Trade) else type(message).__name__


def topic_for(message: MarketData) -> str:
    return TRADE_TOPIC if isinstance(message, Trade) else BOOK_TOPIC


def to_envelope(message: MarketData, producer: str) -> Envelope:
    """Wrap a message in the platform envelope (aggregate = symbol, occurred_at = the message's time)."""
    return Envelope.new(
        type=envelope_type(message),
        producer=producer,
        aggregate_id=message.symbol,
        payload=message.model_dump(mode="json"),
        now=message.timestamp,
    )


def decode_marketdata(envelope: Envelope) -> MarketData:
    """The typed message inside an envelope; MarketDataError for an unknown type or a payload that breaks the schema."""
    model = _TYPES.get(envelope.type)
    if model is None:
        raise MarketDataError(f"not a market-data message: {envelope.type!r}")
    try:
        return model.model_validate(envelope.payload)
    except ValidationError as exc:
        raise MarketDataError(f"{envelope.type}: {exc.errors()[0]['msg']}") from None
