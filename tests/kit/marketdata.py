"""What the market-data and replay unit tests share: a fixed start time, the sample file, the CSV header,
and the first messages of a synthetic market."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from data.replay.source import SyntheticMarket
from shared.marketdata import MarketData

NOW = datetime(2026, 3, 1, tzinfo=UTC)
SAMPLE = Path(__file__).resolve().parents[2] / "data" / "samples" / "btc_usd_sample.csv"
HEADER = "timestamp,kind,symbol,side,price,qty,trade_id\n"


def synthetic(seed: int, count: int, **options: Any) -> list[MarketData]:
    """The first `count` messages of the synthetic market of `seed`, starting at NOW."""
    return list(itertools.islice(SyntheticMarket(seed=seed, start_at=NOW, **options).messages(), count))
