"""Issue 14, item 8: which stored market data is an anomaly (pure: rows in, anomalies out)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from types import SimpleNamespace

from services.analytics.anomalies import ScanPolicy, find_anomalies
from shared.contracts.analytics import AnomalyKind

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
POLICY = ScanPolicy(stale_after_s=300, max_gap_minutes=5, jump_sigmas=6.0)


def _closes(prices: list[str], start: datetime, skip: frozenset[int] = frozenset()) -> list[SimpleNamespace]:
    return [
        SimpleNamespace(venue="kraken", instrument="BTC/USD", bucket=start + timedelta(minutes=m), close=Decimal(p))
        for m, p in enumerate(prices)
        if m not in skip
    ]


def test_a_quiet_feed_is_stale_once_per_episode() -> None:
    last = NOW - timedelta(minutes=10)
    health = [
        SimpleNamespace(venue="kraken", instrument="BTC/USD", last_trade_at=last),
        SimpleNamespace(venue="kraken", instrument="ETH/USD", last_trade_at=NOW - timedelta(seconds=30)),
        SimpleNamespace(venue="kraken", instrument="SOL/USD", last_trade_at=None),
    ]
    found = find_anomalies(health, [], NOW, POLICY)
    assert [(a.kind, a.symbol, a.observed_at, a.magnitude) for a in found] == [
        (AnomalyKind.STALE_FEED, "BTC/USD", last, Decimal(600))
    ]


def test_a_jump_beyond_the_sigmas_and_a_hole_in_the_minutes() -> None:
    wiggle = ["100.0", "100.1", "100.0", "100.1"] * 6  # small alternating returns
    prices = [*wiggle, "110.0", "110.1", "110.0"]
    start = NOW - timedelta(hours=1)
    found = find_anomalies([], _closes(prices, start, skip=frozenset(range(10, 16))), NOW, POLICY)
    kinds = [(a.kind, a.observed_at) for a in found]
    assert (AnomalyKind.TRADE_GAP, start + timedelta(minutes=9)) in kinds
    assert (AnomalyKind.PRICE_JUMP, start + timedelta(minutes=24)) in kinds
    assert len(found) == 2


def test_calm_minutes_are_no_anomaly() -> None:
    prices = ["100.0", "100.1", "100.2", "100.1", "100.0"] * 5
    assert find_anomalies([], _closes(prices, NOW - timedelta(hours=1)), NOW, POLICY) == []
