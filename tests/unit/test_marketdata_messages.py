"""Market-data messages (trades, book snapshots and deltas): their validation and their envelopes (no servers).

The replay's sources are in test_marketdata_sources.py, its pacing and CLI in test_marketdata_replay.py.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from shared.domain.types import OrderSide
from shared.events import Envelope
from shared.marketdata import BookDelta, BookSnapshot, Level, MarketDataError, Trade, decode_marketdata, to_envelope
from tests.kit.marketdata import NOW


def _trade(**overrides: Any) -> dict[str, Any]:
    return {
        "venue": "kraken",
        "symbol": "BTC/USD",
        "trade_id": "1",
        "price": "60000.1",
        "qty": "0.5",
        "side": "buy",
        "timestamp": NOW.isoformat(),
        **overrides,
    }


def _book(**overrides: Any) -> dict[str, Any]:
    return {
        "venue": "kraken",
        "symbol": "BTC/USD",
        "bids": [{"price": "100.0", "qty": "1"}, {"price": "99.5", "qty": "2"}],
        "asks": [{"price": "100.5", "qty": "1"}, {"price": "101", "qty": "3"}],
        "timestamp": NOW.isoformat(),
        "sequence": 1,
        **overrides,
    }


# --------------------------------------------------------------------------- message models


@pytest.mark.parametrize(
    "overrides",
    [
        {"price": 60000.1},  # a float: inexact
        {"qty": 1},  # a JSON number, not a decimal string
        {"price": "-1"},
        {"price": "0"},
        {"qty": "0"},  # a trade of nothing
        {"price": "1e5"},
        {"side": "bid"},
        {"symbol": "btcusd"},
        {"timestamp": "2026-03-01T00:00:00"},  # no offset
        {"extra": "field"},
    ],
)
def test_trade_refuses_bad_fields(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Trade.model_validate(_trade(**overrides))


def test_trade_keeps_decimal_strings_on_the_wire() -> None:
    trade = Trade.model_validate(_trade(price="60000.10", qty="0.00000001"))
    assert trade.price == Decimal("60000.1")
    assert trade.side is OrderSide.BUY
    dumped = trade.model_dump(mode="json")
    assert dumped["price"] == "60000.1"
    assert dumped["qty"] == "0.00000001"
    assert dumped["side"] == "buy"


def test_delta_accepts_qty_zero_and_refuses_negative_and_duplicate_levels() -> None:
    delta = BookDelta.model_validate(_book(bids=[{"price": "100", "qty": "0"}], asks=[]))
    assert delta.bids[0].qty == 0
    with pytest.raises(ValidationError, match="must not be negative"):
        BookDelta.model_validate(_book(bids=[{"price": "100", "qty": "-0.1"}], asks=[]))
    with pytest.raises(ValidationError, match="must be positive"):
        BookDelta.model_validate(_book(bids=[{"price": "-100", "qty": "1"}], asks=[]))
    with pytest.raises(ValidationError, match="more than once"):
        BookDelta.model_validate(_book(asks=[{"price": "101", "qty": "1"}, {"price": "101.0", "qty": "0"}]))
    with pytest.raises(ValidationError):
        Level.model_validate({"price": 100.5, "qty": "1"})


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"bids": [{"price": "100", "qty": "0"}]}, "positive qty"),
        ({"bids": [{"price": "99.5", "qty": "1"}, {"price": "100", "qty": "1"}]}, "best first"),
        ({"asks": [{"price": "101", "qty": "1"}, {"price": "100.5", "qty": "1"}]}, "best first"),
        ({"asks": [{"price": "100", "qty": "1"}]}, "crossed book"),
        ({"sequence": -1}, "greater than or equal"),
    ],
)
def test_snapshot_is_sorted_positive_and_never_crossed(overrides: dict[str, Any], reason: str) -> None:
    assert BookSnapshot.model_validate(_book()).bids[0].price == Decimal(100)
    with pytest.raises(ValidationError, match=reason):
        BookSnapshot.model_validate(_book(**overrides))


def test_envelope_round_trip_carries_type_key_time_and_decimal_strings() -> None:
    snapshot = BookSnapshot.model_validate(_book())
    trade = Trade.model_validate(_trade())
    for message, kind in ((snapshot, "BookSnapshot"), (trade, "TradePrinted")):
        envelope = Envelope.from_bytes(to_envelope(message, "feed-replay", correlation_id="run-1").to_bytes())
        assert (envelope.type, envelope.producer, envelope.aggregate_id) == (kind, "feed-replay", "BTC/USD")
        assert envelope.occurred_at == NOW
        assert envelope.correlation_id == "run-1"
        assert decode_marketdata(envelope) == message
    raw = json.loads(to_envelope(trade, "feed-replay").to_bytes())
    assert raw["payload"]["price"] == "60000.1"


def test_decode_refuses_garbage_with_a_clear_error() -> None:
    envelope = to_envelope(Trade.model_validate(_trade()), "feed-replay")
    with pytest.raises(MarketDataError, match="not a market-data message: 'OrderFilled'"):
        decode_marketdata(envelope.model_copy(update={"type": "OrderFilled"}))
    with pytest.raises(MarketDataError, match=r"TradePrinted .*: price: must be positive"):
        decode_marketdata(envelope.model_copy(update={"payload": {**envelope.payload, "price": "-1"}}))
    with pytest.raises(MarketDataError, match="qty"):
        decode_marketdata(envelope.model_copy(update={"payload": {**envelope.payload, "qty": 0.5}}))
    with pytest.raises(MarketDataError, match="aggregate id"):
        decode_marketdata(envelope.model_copy(update={"aggregate_id": "ETH/USD"}))
