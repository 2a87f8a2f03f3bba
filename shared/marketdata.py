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

from pydantic import ValidationError

from shared.contracts.marketdata import (
    BookDelta,
    BookSnapshot,
    Level,
    MarketData,
    NonNegativeDecimal,
    PositiveDecimal,
    SymbolText,
    Trade,
    VenueName,
)
from shared.contracts.registry import new_envelope
from shared.events.envelope import Envelope

__all__ = [
    "BOOK_TOPIC",
    "TRADE_TOPIC",
    "BookDelta",
    "BookSnapshot",
    "Level",
    "MarketData",
    "MarketDataError",
    "NonNegativeDecimal",
    "PositiveDecimal",
    "SymbolText",
    "Trade",
    "VenueName",
    "decode_marketdata",
    "envelope_type",
    "to_envelope",
    "topic_for",
]

BOOK_TOPIC = "marketdata.book-events.v1"
TRADE_TOPIC = "marketdata.trade-events.v1"


class MarketDataError(ValueError):
    """A market-data message that cannot be decoded or violates the schema."""


_TYPES: dict[str, type[BookSnapshot] | type[BookDelta] | type[Trade]] = {
    "BookSnapshot": BookSnapshot,
    "BookDelta": BookDelta,
    "TradePrinted": Trade,
}


def envelope_type(message: MarketData) -> str:
    """The envelope `type` of a message: BookSnapshot, BookDelta or TradePrinted."""
    return message.TYPE


def topic_for(message: MarketData) -> str:
    """The default topic of a message (book or trade events)."""
    return TRADE_TOPIC if isinstance(message, Trade) else BOOK_TOPIC


def to_envelope(message: MarketData, producer: str, *, correlation_id: str | None = None) -> Envelope:
    """Wrap a message in the platform envelope (aggregate = symbol, occurred_at = the message's time)."""
    return new_envelope(
        message,
        producer=producer,
        aggregate_id=message.symbol,
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
