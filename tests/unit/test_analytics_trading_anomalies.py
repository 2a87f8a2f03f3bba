"""Issue 14, item 8: the thresholds of the trading anomalies (slippage vs the book, fill rate) and the crossed-book
records the scan turns into anomalies (pure: values in, verdicts out)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import pytest

from services.analytics.anomalies import crossed_books
from services.analytics.trading import TradingPolicy, expected_price, low_fill_rate, slippage_bps, walk_price
from shared.contracts.analytics import AnomalyKind
from shared.domain.types import Liquidity, OrderSide
from shared.marketdata import BookDelta, Level, to_envelope

BIDS = [["99", "1"], ["98", "2"]]
ASKS = [["101", "1"], ["102", "2"], ["104", "1"]]
NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_the_walk_price_takes_the_levels_in_turn_and_the_rest_at_the_worst() -> None:
    assert walk_price(ASKS, Decimal(1)) == Decimal(101)
    assert walk_price(ASKS, Decimal(3)) == (Decimal(101) + Decimal(204)) / 3
    assert walk_price(ASKS, Decimal(6)) == (Decimal(101) + Decimal(204) + Decimal(104) * 3) / 6
    assert walk_price([], Decimal(1)) is None


def test_a_taker_is_expected_at_the_walk_and_a_maker_at_the_mid() -> None:
    assert expected_price(OrderSide.BUY, Liquidity.TAKER, Decimal(1), BIDS, ASKS) == Decimal(101)
    assert expected_price(OrderSide.SELL, Liquidity.TAKER, Decimal(3), BIDS, ASKS) == (Decimal(99) + Decimal(196)) / 3
    assert expected_price(OrderSide.SELL, Liquidity.MAKER, Decimal(3), BIDS, ASKS) == Decimal(100)
    assert expected_price(OrderSide.BUY, Liquidity.MAKER, Decimal(1), BIDS, []) is None


@pytest.mark.parametrize(
    ("side", "price", "bps"),
    [
        (OrderSide.BUY, "101", "0"),
        (OrderSide.BUY, "102.01", "100"),  # paid 1 % more than the book
        (OrderSide.SELL, "99.99", "1"),  # sold 1 bp lower than 100
        (OrderSide.SELL, "101", "-100"),  # sold far better than the book: negative, and as suspect
    ],
)
def test_slippage_is_signed_worse_for_the_account(side: OrderSide, price: str, bps: str) -> None:
    expected = Decimal(101) if side == OrderSide.BUY else Decimal(100)
    assert slippage_bps(side, Decimal(price), expected) == Decimal(bps)


def test_the_fill_rate_is_low_only_over_enough_orders_and_strictly_below_the_threshold() -> None:
    policy = TradingPolicy(fill_rate_min_orders=10, fill_rate_threshold=Decimal("0.2"))
    assert low_fill_rate(9, 0, policy) is None  # too few orders to say
    assert low_fill_rate(10, 1, policy) == Decimal("0.1")
    assert low_fill_rate(10, 2, policy) is None  # 0.2 is not below 0.2
    assert low_fill_rate(20, 20, policy) is None


def test_a_quarantined_crossed_delta_becomes_one_crossed_book_anomaly_and_garbage_none() -> None:
    delta = BookDelta(
        venue="kraken",
        symbol="BTC/USD",
        bids=[Level(price=Decimal(101), qty=Decimal(1))],
        asks=[],
        timestamp=NOW,
        sequence=7,
    )
    rows = [
        SimpleNamespace(raw=to_envelope(delta, "kraken").to_bytes(), quarantined_at=NOW),
        SimpleNamespace(raw=b"not an envelope", quarantined_at=NOW),
    ]
    found = crossed_books(rows, NOW)
    assert [(a.kind, a.venue, a.symbol, a.observed_at, a.account_id) for a in found] == [
        (AnomalyKind.CROSSED_BOOK, "kraken", "BTC/USD", NOW, None)
    ]
