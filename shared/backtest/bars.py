"""Candles (`Bar`), their CSV file format, and the checks a backtest range must pass (no empty or gapped range).

Bar file (CSV, UTF-8, header required), one row per bar, in time order per symbol:

    start,symbol,open,high,low,close,volume
    2026-01-01T00:00:00Z,BTC/USD,60000.1,60010.0,59990.5,60005.2,1.25

`start` is the bar's opening time; every bar of a file has the same length (`interval`, given by the caller).
A bar becomes known only at its end (`start + interval`): that is when a strategy sees it.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path

from shared.domain.money import format_decimal

BAR_COLUMNS = ("start", "symbol", "open", "high", "low", "close", "volume")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)
ZERO = Decimal(0)


def to_us(at: datetime) -> int:
    """Microseconds since the epoch of a tz-aware time."""
    return (at - EPOCH) // MICROSECOND


def from_us(us: int) -> datetime:
    """The tz-aware UTC time of `us` microseconds since the epoch."""
    return EPOCH + timedelta(microseconds=us)


class BacktestInputError(ValueError):
    """Input a backtest cannot run on (unknown strategy, bad parameter, empty or gapped range); names the culprit."""


@dataclass(frozen=True, slots=True)
class Bar:
    """One candle of `symbol` over [start, end)."""

    symbol: str
    start: datetime
    end: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(slots=True)
class BarBuilder:
    """One symbol's bar built from trade prints, [start, start + interval) in microseconds since the epoch: the one
    bar builder of the backtester and the live strategy worker (a bar is handed to the strategy at its end)."""

    symbol: str
    interval_us: int
    start: int = -1  # -1: no bar open
    open: Decimal = ZERO
    high: Decimal = ZERO
    low: Decimal = ZERO
    close: Decimal = ZERO
    volume: Decimal = ZERO

    def add(self, at_us: int, price: Decimal, qty: Decimal) -> bool:
        """Take a print at `at_us`; True when it opened a new bar (which ends at `self.start + self.interval_us`)."""
        start = at_us - at_us % self.interval_us
        opened = start != self.start
        if opened:
            self.start, self.open, self.high, self.low, self.volume = start, price, price, price, ZERO
        else:
            self.high, self.low = max(self.high, price), min(self.low, price)
        self.close = price
        self.volume += qty
        return opened

    def close_bar(self, start: int) -> Bar | None:
        """The bar that opened at `start`, once; None when it was closed already or another bar has opened since."""
        if self.start != start or start < 0:
            return None
        self.start = -1
        end = start + self.interval_us
        return Bar(self.symbol, from_us(start), from_us(end), self.open, self.high, self.low, self.close, self.volume)


def _decimal(where: str, name: str, text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise BacktestInputError(f"{where}: {name} is not a decimal: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise BacktestInputError(f"{where}: {name} must be a finite, non-negative decimal: {text!r}")
    return value


def _timestamp(where: str, text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)  # Python 3.11 reads "Z" too
    except ValueError:
        raise BacktestInputError(f"{where}: start is not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise BacktestInputError(f"{where}: start needs a UTC offset: {text!r}")
    return value


def parse_bar(where: str, row: Sequence[str], interval: timedelta) -> Bar:
    """One CSV row as a Bar; `BacktestInputError` naming `where` and the field when it is malformed."""
    try:  # the common, well-formed row in one go; anything odd takes the field-by-field path for its message
        if len(row) == len(BAR_COLUMNS) and row[1]:
            start = datetime.fromisoformat(row[0])
            open_, high, low, close, volume = (Decimal(text) for text in row[2:])
            if (
                start.tzinfo is not None
                and 0 < low <= min(open_, close)
                and max(open_, close) <= high
                and high.is_finite()
                and volume.is_finite()
                and volume >= 0
            ):
                return Bar(row[1], start, start + interval, open_, high, low, close, volume)
    except (ValueError, ArithmeticError):
        pass
    return _parse_bar_slowly(where, row, interval)


def _parse_bar_slowly(where: str, row: Sequence[str], interval: timedelta) -> Bar:
    if len(row) != len(BAR_COLUMNS):
        raise BacktestInputError(f"{where}: expected {len(BAR_COLUMNS)} fields, got {len(row)}")
    start = _timestamp(where, row[0])
    open_, high, low, close, volume = (
        _decimal(where, name, text) for name, text in zip(BAR_COLUMNS[2:], row[2:], strict=True)
    )
    if not row[1]:
        raise BacktestInputError(f"{where}: symbol is empty")
    if min(open_, high, low, close) <= 0:
        raise BacktestInputError(f"{where}: prices must be positive")
    if not low <= min(open_, close) <= max(open_, close) <= high:
        raise BacktestInputError(f"{where}: need low <= open, close <= high")
    return Bar(row[1], start, start + interval, open_, high, low, close, volume)


def read_bars(path: Path, interval: timedelta) -> list[Bar]:
    """Every bar of a bar file, checked (fields, time order per symbol, one length) before any is used."""
    bars: list[Bar] = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header) != BAR_COLUMNS:
            raise BacktestInputError(f"{path}: the header must be {','.join(BAR_COLUMNS)}")
        for line, row in enumerate(reader, start=2):
            bars.append(parse_bar(f"{path}:{line}", row, interval))
    return bars


def write_bars(bars: Iterable[Bar], path: Path) -> int:
    """Write bars in the bar file format; returns how many."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(BAR_COLUMNS)
        for bar in bars:
            prices = (bar.open, bar.high, bar.low, bar.close, bar.volume)
            writer.writerow([bar.start.isoformat(), bar.symbol, *(format_decimal(p) for p in prices)])
            count += 1
    return count


def in_range(times: Iterable[datetime], start: datetime | None, end: datetime | None) -> Iterator[int]:
    """Indexes of `times` within [start, end)."""
    for index, at in enumerate(times):
        if (start is None or at >= start) and (end is None or at < end):
            yield index


def check_continuity(
    what: str,
    times: Sequence[datetime],
    max_gap: timedelta,
    declared: Sequence[tuple[datetime, datetime]] = (),
) -> None:
    """`BacktestInputError` for an empty series or one with a hole longer than `max_gap` (reported, never bridged);
    a hole over a `declared` window (a scenario's feed outage) may be longer by that window's length."""
    if not times:
        raise BacktestInputError(f"{what}: no data in the requested range")
    for before, after in pairwise(times):
        if after < before:
            raise BacktestInputError(f"{what}: out of time order at {after.isoformat()}")
        if after - before > max_gap:
            allowance = max((end - start for start, end in declared if before <= end and after >= start), default=None)
            if allowance is not None and after - before - allowance <= max_gap:
                continue
            raise BacktestInputError(
                f"{what}: gap from {before.isoformat()} to {after.isoformat()} ({after - before}) exceeds {max_gap}"
            )
