"""Sources of market-data messages: a CSV file, or a seeded synthetic market (clearly named as such).

CSV format (header required): `timestamp,kind,symbol,side,price,qty,trade_id`
- `kind=trade`: one public trade (`side` = aggressor: buy/sell).
- `kind=book`: one level (`side` bid/ask); consecutive book rows with the same timestamp and symbol
  form one BookSnapshot.
Timestamps are ISO 8601 with an offset; prices and quantities are plain decimals.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from shared.domain.money import MoneyError, quantize_nearest, to_decimal
from shared.marketdata import BookSnapshot, Level, MarketData, Trade

SYNTHETIC_VENUE = "synthetic"
COLUMNS = ("timestamp", "kind", "symbol", "side", "price", "qty", "trade_id")


class SourceError(ValueError):
    """A bad input file; the message names the line."""


def read_csv(path: Path, venue: str = "replay") -> Iterator[MarketData]:
    """Messages from a CSV file in the documented format, in file order."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or tuple(reader.fieldnames) != COLUMNS:
            raise SourceError(f"{path}: line 1: header must be {','.join(COLUMNS)}")
        pending: list[tuple[int, dict[str, str]]] = []
        for line, row in enumerate(reader, start=2):
            if pending and (row["kind"] != "book" or _key(row) != _key(pending[0][1])):
                yield _snapshot(path, venue, pending)
                pending = []
            if row["kind"] == "book":
                pending.append((line, row))
            elif row["kind"] == "trade":
                yield _trade(path, venue, line, row)
            else:
                raise SourceError(f"{path}: line {line}: kind must be trade or book, not {row['kind']!r}")
        if pending:
            yield _snapshot(path, venue, pending)


def _key(row: dict[str, str]) -> tuple[str, str]:
    return row["timestamp"], row["symbol"]


def _parse(path: Path, line: int, row: dict[str, str]) -> tuple[datetime, Decimal, Decimal]:
    try:
        at = datetime.fromisoformat(row["timestamp"])
        price, qty = to_decimal(row["price"]), to_decimal(row["qty"])
    except (ValueError, MoneyError) as exc:
        raise SourceError(f"{path}: line {line}: {exc}") from None
    if at.tzinfo is None:
        raise SourceError(f"{path}: line {line}: timestamp needs a UTC offset")
    if price <= 0 or qty < 0:
        raise SourceError(f"{path}: line {line}: price must be positive and qty not negative")
    return at, price, qty


def _trade(path: Path, venue: str, line: int, row: dict[str, str]) -> Trade:
    at, price, qty = _parse(path, line, row)
    if row["side"] not in {"buy", "sell"}:
        raise SourceError(f"{path}: line {line}: a trade's side must be buy or sell")
    return Trade(
        venue=venue,
        symbol=row["symbol"],
        trade_id=row["trade_id"] or f"{line}",
        price=price,
        qty=qty,
        side=row["side"],
        timestamp=at,
    )


def _snapshot(path: Path, venue: str, rows: list[tuple[int, dict[str, str]]]) -> BookSnapshot:
    bids: list[Level] = []
    asks: list[Level] = []
    at = datetime.min.replace(tzinfo=UTC)
    for line, row in rows:
        at, price, qty = _parse(path, line, row)
        if row["side"] not in {"bid", "ask"}:
            raise SourceError(f"{path}: line {line}: a book level's side must be bid or ask")
        (bids if row["side"] == "bid" else asks).append(Level(price=price, qty=qty))
    return BookSnapshot(
        venue=venue, symbol=rows[0][1]["symbol"], bids=bids, asks=asks, timestamp=at, sequence=rows[0][0]
    )


@dataclass(frozen=True)
class SyntheticMarket:
    """A SYNTHETIC market, not real data: a seeded random walk of the mid with a 10-level book around it
    and trades that print through the book, so resting orders near the mid get crossed within a minute."""

    symbol: str = "BTC/USD"
    seed: int = 7
    start_price: Decimal = Decimal("60000")
    start_at: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    step_s: float = 1.0
    volatility: float = 0.0004  # relative standard deviation of the mid per step
    tick: Decimal = Decimal("0.1")
    levels: int = 10

    def messages(self) -> Iterator[MarketData]:
        """Endless: per step one book snapshot and one to three trades."""
        rng = random.Random(self.seed)  # noqa: S311 - simulation, not cryptography
        mid = self.start_price
        at = self.start_at
        step = 0
        while True:
            mid = quantize_nearest(mid * Decimal(str(1 + rng.gauss(0, self.volatility))), self.tick)
            spread = self.tick * rng.randint(1, 5)
            yield self._book(mid, spread, rng, at, step)
            for n in range(rng.randint(1, 3)):
                yield self._trade(mid, spread, rng, at + timedelta(milliseconds=100 * (n + 1)), step, n)
            step += 1
            at += timedelta(seconds=self.step_s)

    def _book(self, mid: Decimal, spread: Decimal, rng: random.Random, at: datetime, step: int) -> BookSnapshot:
        best_bid, best_ask = mid - spread / 2, mid + spread / 2
        bids = [
            Level(price=quantize_nearest(best_bid - self.tick * i, self.tick), qty=self._qty(rng))
            for i in range(self.levels)
        ]
        asks = [
            Level(price=quantize_nearest(best_ask + self.tick * i, self.tick), qty=self._qty(rng))
            for i in range(self.levels)
        ]
        if bids[0].price >= asks[0].price:
            asks = [Level(price=bids[0].price + self.tick * (i + 1), qty=a.qty) for i, a in enumerate(asks)]
        return BookSnapshot(
            venue=SYNTHETIC_VENUE, symbol=self.symbol, bids=bids, asks=asks, timestamp=at, sequence=step
        )

    def _trade(self, mid: Decimal, spread: Decimal, rng: random.Random, at: datetime, step: int, n: int) -> Trade:
        side = "buy" if rng.random() < 0.5 else "sell"
        # A print up to 3 ticks beyond the touch: it passes through resting orders near the mid.
        offset = spread / 2 + self.tick * rng.randint(0, 3)
        price = quantize_nearest(mid + offset if side == "buy" else mid - offset, self.tick)
        return Trade(
            venue=SYNTHETIC_VENUE,
            symbol=self.symbol,
            trade_id=f"syn-{self.seed}-{step}-{n}",
            price=price,
            qty=self._qty(rng),
            side=side,
            timestamp=at,
        )

    @staticmethod
    def _qty(rng: random.Random) -> Decimal:
        return Decimal(rng.randint(1, 200)) / Decimal(100)
