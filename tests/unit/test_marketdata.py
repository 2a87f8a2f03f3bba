"""Market-data messages, the CSV source and the synthetic market."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import ValidationError

from data.replay.source import SourceError, SyntheticMarket, read_csv
from shared.events import Envelope
from shared.marketdata import BookDelta, BookSnapshot, MarketDataError, Trade, decode_marketdata, to_envelope

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "btc_usd_sample.csv"


def test_prices_are_decimal_strings_and_floats_are_refused() -> None:
    with pytest.raises(ValidationError):
        Trade.model_validate(
            {
                "venue": "v",
                "symbol": "BTC/USD",
                "trade_id": "1",
                "price": 1.5,
                "qty": "1",
                "side": "buy",
                "timestamp": NOW.isoformat(),
            }
        )
    delta = BookDelta.model_validate(
        {
            "venue": "v",
            "symbol": "BTC/USD",
            "bids": [{"price": "10", "qty": "0"}],
            "timestamp": NOW.isoformat(),
            "sequence": 3,
        }
    )
    assert delta.bids[0].qty == 0


def test_envelope_round_trip_and_garbage() -> None:
    trade = Trade(
        venue="v", symbol="BTC/USD", trade_id="t1", price=Decimal("10.5"), qty=Decimal("2"), side="sell", timestamp=NOW
    )
    envelope = Envelope.from_bytes(to_envelope(trade, "feed-replay").to_bytes())
    assert decode_marketdata(envelope) == trade
    bad = envelope.model_copy(update={"payload": {**envelope.payload, "price": "-1"}})
    with pytest.raises(MarketDataError):
        decode_marketdata(bad)
    with pytest.raises(MarketDataError, match="not a market-data message"):
        decode_marketdata(envelope.model_copy(update={"type": "OrderFilled"}))


def test_csv_sample_groups_book_rows_into_snapshots() -> None:
    messages = list(read_csv(SAMPLE))
    snapshots = [m for m in messages if isinstance(m, BookSnapshot)]
    trades = [m for m in messages if isinstance(m, Trade)]
    assert snapshots
    assert trades
    assert all(len(s.bids) == 5 and len(s.asks) == 5 for s in snapshots)


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "timestamp,kind,symbol,side,price,qty,trade_id\n"
        "2026-01-01T00:00:00+00:00,trade,BTC/USD,buy,100,1,t1\n"
        "2026-01-01T00:00:01+00:00,trade,BTC/USD,buy,abc,1,t2\n"
    )
    with pytest.raises(SourceError, match="line 3"):
        list(read_csv(bad))


def test_synthetic_market_is_deterministic_per_seed_and_never_crossed() -> None:
    first = list(itertools.islice(SyntheticMarket(seed=3, start_at=NOW).messages(), 300))
    again = list(itertools.islice(SyntheticMarket(seed=3, start_at=NOW).messages(), 300))
    other = list(itertools.islice(SyntheticMarket(seed=4, start_at=NOW).messages(), 300))
    assert first == again
    assert first != other
    books = [m for m in first if isinstance(m, BookSnapshot)]
    assert all(b.bids[0].price < b.asks[0].price for b in books)


def test_synthetic_trades_print_through_the_touch() -> None:
    messages = list(itertools.islice(SyntheticMarket(seed=5, start_at=NOW).messages(), 2_000))
    book = None
    through = 0
    for message in messages:
        if isinstance(message, BookSnapshot):
            book = message
        elif book is not None and (message.price > book.asks[0].price or message.price < book.bids[0].price):
            through += 1
    assert through > 100
