"""Bar files for the backtest service's tests: a seeded random walk of one-minute BTC/USD candles."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from shared.backtest.bars import Bar, write_bars

SYMBOL = "BTC/USD"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def random_bars(count: int, seed: int, *, skip: int | None = None) -> list[Bar]:
    """`count` one-minute bars from T0 (the bar at index `skip` left out: a gap)."""
    rng = random.Random(seed)
    price, bars = 60_000.0, []
    for index in range(count):
        start = price
        price *= 1 + rng.gauss(0, 0.002)
        high = max(start, price) * (1 + abs(rng.gauss(0, 0.0003)))
        low = min(start, price) * (1 - abs(rng.gauss(0, 0.0003)))
        open_, high_, low_, close = (Decimal(str(round(value, 1))) for value in (start, high, low, price))
        if index != skip:
            at = T0 + index * MINUTE
            bars.append(Bar(SYMBOL, at, at + MINUTE, open_, high_, low_, close, Decimal(2)))
    return bars


def write_bar_file(path: Path, count: int, seed: int, *, skip: int | None = None) -> Path:
    """Write `random_bars` to `path` in the bar file format."""
    write_bars(random_bars(count, seed, skip=skip), path)
    return path
