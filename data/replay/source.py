"""Sources of market-data messages for the replay: a file, or a seeded SYNTHETIC market (clearly named as such).

File format (CSV, UTF-8, header required; Parquet with the same columns when pyarrow is installed):

    timestamp,kind,symbol,side,price,qty,trade_id
    2026-01-01T00:00:00Z,book,BTC/USD,bid,59999.9,0.5,
    2026-01-01T00:00:00Z,book,BTC/USD,ask,60000.1,0.7,
    2026-01-01T00:00:01Z,trade,BTC/USD,buy,60000.1,0.2,T1
    2026-01-01T00:00:02Z,delta,BTC/USD,ask,60000.1,0,

- `timestamp`: ISO 8601 with a UTC offset (`Z` or `+00:00`); rows in time order (equal times allowed).
- `kind=book`: one level of a snapshot (`side` bid/ask, `qty` > 0). Consecutive book rows with the same
  timestamp and symbol form one BookSnapshot (any row order; it is sorted best first).
- `kind=delta`: one changed level (`side` bid/ask, `qty` >= 0, "0" removes the level). Consecutive delta
  rows with the same timestamp and symbol form one BookDelta.
- `kind=trade`: one public trade (`side` buy/sell = the aggressor, `qty` > 0); `trade_id` may be empty,
  then it is `L<line>`.
- prices and quantities are plain decimals ("60000.1"), never exponents.
Errors name the file and the line (for Parquet: the row), and the whole file is checked before anything
is published.
"""

from __future__ import annotations

import csv
import functools
import heapq
import importlib
import itertools
import math
import random
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from shared.domain.money import MoneyError, format_decimal, quantize_down, to_decimal
from shared.domain.types import OrderSide
from shared.marketdata import BookDelta, BookSnapshot, Level, MarketData, Trade

SYNTHETIC_VENUE = "synthetic"
FILE_VENUE = "replay"
COLUMNS = ("timestamp", "kind", "symbol", "side", "price", "qty", "trade_id")
KINDS = ("book", "delta", "trade")
# A plain decimal that `to_decimal` accepts as it is (at most 20 integer and 18 fraction digits): parsed directly.
_PLAIN_DECIMAL = re.compile(r"-?[0-9]{1,20}(?:\.[0-9]{1,18})?")


class SourceError(ValueError):
    """A bad input file; the message names the file and the line."""


class MarketDataSource(Protocol):
    def messages(self) -> Iterator[MarketData]:
        """The messages in time order; every call starts again from the beginning."""
        ...


# --------------------------------------------------------------------------- files


@dataclass(frozen=True, slots=True)
class _Row:
    where: str  # "data.csv: line 7"
    line: int
    timestamp: datetime
    kind: str
    symbol: str
    side: str
    price: Decimal
    qty: Decimal
    trade_id: str


class FileSource:
    """Messages read (and fully validated) from a CSV or Parquet file when constructed."""

    def __init__(self, path: Path, venue: str = FILE_VENUE) -> None:
        self.path = path
        self._messages = load_file(path, venue)

    def __len__(self) -> int:
        return len(self._messages)

    def messages(self) -> Iterator[MarketData]:
        """The file's messages in file order."""
        return iter(self._messages)


def load_file(path: Path, venue: str = FILE_VENUE) -> list[MarketData]:
    """Read a `.csv` (or, with pyarrow installed, `.parquet`) file of trades and book levels."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_csv(path, venue)
    if suffix in {".parquet", ".pq"}:
        return read_parquet(path, venue)
    raise SourceError(f"{path}: unsupported file type {suffix or '(none)'!r}: use .csv (or .parquet with pyarrow)")


def read_csv(path: Path, venue: str = FILE_VENUE) -> list[MarketData]:
    """Messages from a CSV file in the documented format."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return parse_records(_csv_records(path, handle), venue)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SourceError(f"{path}: not UTF-8 text") from None


def _csv_records(path: Path, handle: Iterable[str]) -> Iterator[tuple[str, int, Mapping[str, str]]]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None or tuple(name.strip() for name in header) != COLUMNS:
        raise SourceError(f"{path}: line 1: header must be {','.join(COLUMNS)}")
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise SourceError(f"{path}: line {reader.line_num}: not valid CSV: {exc}") from None
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue
        where = f"{path}: line {reader.line_num}"
        if len(fields) != len(COLUMNS):
            raise SourceError(f"{where}: expected {len(COLUMNS)} fields, found {len(fields)}")
        yield where, reader.line_num, dict(zip(COLUMNS, fields, strict=True))


def read_parquet(path: Path, venue: str = FILE_VENUE) -> list[MarketData]:
    """Messages from a Parquet file with the CSV's columns (strings or decimals; floats are refused)."""
    try:
        parquet = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise SourceError(
            f"{path}: reading Parquet needs pyarrow, which is not installed "
            "(`pip install pyarrow`), or convert the file to CSV"
        ) from None
    try:
        rows: list[dict[str, object]] = parquet.read_table(path).to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow's errors derive from these
        raise SourceError(f"{path}: cannot read Parquet: {exc}") from None
    missing = [name for name in COLUMNS if rows and name not in rows[0]]
    if missing:
        raise SourceError(f"{path}: missing column(s) {', '.join(missing)}")
    return parse_records(
        (
            (f"{path}: row {index}", index, _parquet_fields(f"{path}: row {index}", row))
            for index, row in enumerate(rows, 1)
        ),
        venue,
    )


def _parquet_fields(where: str, row: Mapping[str, object]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for name in COLUMNS:
        value = row.get(name)
        if isinstance(value, float):
            raise SourceError(f"{where}: {name} is a float (inexact): store it as a string or decimal")
        if isinstance(value, datetime):
            fields[name] = value.isoformat()
        elif isinstance(value, Decimal):
            fields[name] = format_decimal(value)
        else:
            fields[name] = "" if value is None else str(value)
    return fields


def parse_records(records: Iterable[tuple[str, int, Mapping[str, str]]], venue: str = FILE_VENUE) -> list[MarketData]:
    """Validate rows `(where, line, fields)` in the documented format and group them into messages."""
    messages: list[MarketData] = []
    sequences: dict[str, int] = {}
    group: list[_Row] = []
    previous: _Row | None = None
    for where, line, fields in records:
        row = _parse_row(where, line, fields)
        if previous is not None and row.timestamp < previous.timestamp:
            raise SourceError(f"{where}: timestamp goes back in time (line/row {previous.line} is later)")
        previous = row
        if group and (row.kind == "trade" or _group_key(row) != _group_key(group[0])):
            messages.append(_book_message(group, venue, sequences))
            group = []
        if row.kind == "trade":
            messages.append(_trade(row, venue))
        else:
            group.append(row)
    if group:
        messages.append(_book_message(group, venue, sequences))
    return messages


def _group_key(row: _Row) -> tuple[str, datetime, str]:
    return row.kind, row.timestamp, row.symbol


def _parse_row(where: str, line: int, fields: Mapping[str, str]) -> _Row:
    kind = fields["kind"].strip()
    side = fields["side"].strip()
    if kind not in KINDS:
        raise SourceError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    sides = ("buy", "sell") if kind == "trade" else ("bid", "ask")
    if side not in sides:
        raise SourceError(f"{where}: a {kind} row's side must be {' or '.join(sides)}, not {side!r}")
    return _Row(
        where=where,
        line=line,
        timestamp=_parse_timestamp(where, fields["timestamp"]),
        kind=kind,
        symbol=fields["symbol"].strip(),
        side=side,
        price=_parse_decimal(where, "price", fields["price"]),
        qty=_parse_decimal(where, "qty", fields["qty"]),
        trade_id=fields["trade_id"].strip(),
    )


def _parse_timestamp(where: str, text: str) -> datetime:
    try:
        parsed = _utc_time(text.strip())
    except ValueError:
        raise SourceError(f"{where}: timestamp {text!r} is not ISO 8601") from None
    if parsed is None:
        raise SourceError(f"{where}: timestamp {text!r} needs a UTC offset (e.g. 'Z' or '+00:00')")
    return parsed


@functools.lru_cache(maxsize=1024)
def _utc_time(text: str) -> datetime | None:
    """The UTC time of an ISO 8601 text, None without an offset (cached: a snapshot's rows share one time)."""
    parsed = datetime.fromisoformat(text)
    return None if parsed.tzinfo is None else parsed.astimezone(UTC)


def _parse_decimal(where: str, name: str, text: str) -> Decimal:
    cleaned = text.strip()
    if _PLAIN_DECIMAL.fullmatch(cleaned):
        return Decimal(cleaned)  # what to_decimal returns for such a text, without its checks
    if not cleaned or "e" in cleaned.lower():
        raise SourceError(f"{where}: {name} must be a plain decimal such as 60000.1, not {text!r}")
    try:
        return to_decimal(cleaned)
    except MoneyError as exc:
        raise SourceError(f"{where}: {name}: {exc}") from None


def _schema_error(where: str, exc: ValidationError) -> SourceError:
    first = exc.errors(include_url=False, include_input=False)[0]
    location = ".".join(str(part) for part in first["loc"])
    message = first["msg"].removeprefix("Value error, ")
    return SourceError(f"{where}: {location + ': ' if location else ''}{message}")


def _trade(row: _Row, venue: str) -> Trade:
    try:
        return Trade(
            venue=venue,
            symbol=row.symbol,
            trade_id=row.trade_id or f"L{row.line}",
            price=row.price,
            qty=row.qty,
            side=OrderSide(row.side),
            timestamp=row.timestamp,
        )
    except ValidationError as exc:
        raise _schema_error(row.where, exc) from None


def _book_message(rows: Sequence[_Row], venue: str, sequences: dict[str, int]) -> BookSnapshot | BookDelta:
    first = rows[0]
    where = first.where if len(rows) == 1 else f"{first.where}-{rows[-1].line}"
    sequence = sequences[first.symbol] = sequences.get(first.symbol, 0) + 1
    model = BookSnapshot if first.kind == "book" else BookDelta
    try:
        bids = sorted((_level(r) for r in rows if r.side == "bid"), key=_price, reverse=True)
        asks = sorted((_level(r) for r in rows if r.side == "ask"), key=_price)
        return model(
            venue=venue, symbol=first.symbol, bids=bids, asks=asks, timestamp=first.timestamp, sequence=sequence
        )
    except ValidationError as exc:
        raise _schema_error(where, exc) from None


def _level(row: _Row) -> Level:
    # The row's decimals passed `_parse_decimal` (to_decimal's checks); Level adds only the signs, checked here.
    if row.price > 0 and row.qty >= 0:
        return Level.model_construct(price=row.price, qty=row.qty)
    return Level(price=row.price, qty=row.qty)  # raises the schema's own error


def _price(level: Level) -> Decimal:
    return level.price


def write_csv(messages: Iterable[MarketData], path: Path) -> int:
    """Write messages in the documented CSV format (what `read_csv` reads back); return the number of rows."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for message in messages:
            for row in _csv_rows(message):
                writer.writerow(row)
                count += 1
    return count


def _csv_rows(message: MarketData) -> Iterator[tuple[str, ...]]:
    at = message.timestamp.isoformat().replace("+00:00", "Z")
    if isinstance(message, Trade):
        yield (
            at,
            "trade",
            message.symbol,
            message.side.value,
            _text(message.price),
            _text(message.qty),
            message.trade_id,
        )
        return
    kind = "book" if isinstance(message, BookSnapshot) else "delta"
    for side, levels in (("bid", message.bids), ("ask", message.asks)):
        for level in levels:
            yield at, kind, message.symbol, side, _text(level.price), _text(level.qty), ""


def _text(value: Decimal) -> str:
    return format_decimal(value)


# --------------------------------------------------------------------------- loops and time shifts


def _shifted(message: MarketData, offset: timedelta, sequence_base: int, suffix: str) -> MarketData:
    if isinstance(message, Trade):
        trade_id = f"{message.trade_id}{suffix}"[-64:]
        return message.model_copy(update={"timestamp": message.timestamp + offset, "trade_id": trade_id})
    return message.model_copy(
        update={"timestamp": message.timestamp + offset, "sequence": message.sequence + sequence_base}
    )


def looped(source: MarketDataSource) -> Iterator[MarketData]:
    """The source again and again, each pass moved forward in time so timestamps keep increasing.

    Book sequence numbers continue across passes and trade ids get a `~<pass>` suffix, so a consumer
    never sees the same id twice. An empty source ends the loop.
    """
    offset = timedelta(0)
    sequence_base = 0
    for pass_index in itertools.count():
        suffix = f"~{pass_index}" if pass_index else ""
        first_at = last_at = None
        count = max_sequence = 0
        for message in source.messages():
            first_at = first_at or message.timestamp
            last_at = message.timestamp
            count += 1
            if not isinstance(message, Trade):
                max_sequence = max(max_sequence, message.sequence)
            yield _shifted(message, offset, sequence_base, suffix)
        if first_at is None or last_at is None:
            return
        span = last_at - first_at
        # The gap between passes: the mean gap between messages, at least a millisecond.
        offset += span + max(span / max(count - 1, 1), timedelta(milliseconds=1))
        sequence_base += max_sequence


def rebased(messages: Iterable[MarketData], start_at: datetime) -> Iterator[MarketData]:
    """The messages moved in time so that the first one happens at `start_at` (gaps kept)."""
    offset: timedelta | None = None
    for message in messages:
        if offset is None:
            offset = start_at - message.timestamp
        yield _shifted(message, offset, 0, "")


# --------------------------------------------------------------------------- the synthetic market


def _draw_qty(rng: random.Random, depth: int, lot: Decimal) -> Decimal:
    # Deeper levels hold more: 0.05..0.5 at the touch, growing by a quarter per level.
    raw = Decimal(repr(rng.uniform(0.05, 0.5) * (1 + 0.25 * depth)))
    return max(lot, quantize_down(raw, lot))


def _to_grid(value: Decimal, step: Decimal, rounding: str) -> Decimal:
    return (value / step).to_integral_value(rounding=rounding) * step


_Print = tuple[OrderSide, Decimal, Decimal]  # aggressor side, price, qty


@dataclass(slots=True)
class _Book:
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SyntheticMarket:
    """A SYNTHETIC market, not real data: a seeded random walk of the mid with a book around it.

    Every step (`step_s` apart, starting at `start_at`; no wall clock inside) the log mid takes a
    Gaussian step of `volatility`, pulled gently back towards `start_price` so an endless feed stays
    near it. The book has `levels` levels per side: the touch at one to three ticks of spread, deeper
    levels on a fixed price grid. Levels the mid moved through are printed as trades (buys up the old
    asks, sells down the old bids), plus a few small trades at the new touch; then the new book follows,
    a full snapshot every `snapshot_every` steps and deltas in between. At the defaults a resting order
    0.05 % from the mid is usually crossed within a minute at speed 1. The same seed (and parameters)
    gives the same messages; the venue is always "synthetic".
    """

    symbol: str = "BTC/USD"
    seed: int = 7
    start_price: Decimal = Decimal("60000")
    start_at: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    volatility: float = 0.0003  # standard deviation of the log mid per step
    step_s: float = 1.0
    levels: int = 10
    tick: Decimal = Decimal("0.1")
    lot: Decimal = Decimal("0.0001")
    snapshot_every: int = 10
    mean_reversion: float = 0.002  # fraction of the log distance to start_price removed per step

    def __post_init__(self) -> None:
        problems = [
            message
            for failed, message in (
                (self.start_at.tzinfo is None, "start_at must be timezone-aware"),
                (self.start_price <= 0, "start_price must be positive"),
                (not 0 <= self.volatility < 0.5, "volatility must be in [0, 0.5)"),
                (not 0 <= self.mean_reversion <= 1, "mean_reversion must be in [0, 1]"),
                (not (self.step_s > 0 and math.isfinite(self.step_s)), "step_s must be positive"),
                (self.levels < 1, "levels must be at least 1"),
                (self.tick <= 0 or self.lot <= 0, "tick and lot must be positive"),
                (self.snapshot_every < 1, "snapshot_every must be at least 1"),
                (self.start_price < 10 * self.tick, "start_price must be at least 10 ticks"),
            )
            if failed
        ]
        if problems:
            raise ValueError(f"SyntheticMarket: {'; '.join(problems)}")

    @property
    def venue(self) -> str:
        return SYNTHETIC_VENUE

    @property
    def grid(self) -> Decimal:
        """Spacing of the levels behind the touch: half a step's typical move, at least one tick."""
        return max(self.tick, quantize_down(self.start_price * Decimal(repr(self.volatility)) / 2, self.tick))

    def messages(self) -> Iterator[MarketData]:
        """Endless: a snapshot first; then per step the prints through the old book, the book change, prints at the touch."""
        rng = random.Random(self.seed)  # noqa: S311 - a simulation, not cryptography
        numbers = itertools.count(1)
        anchor = math.log(self.start_price)
        log_mid = anchor
        book = self._book(math.exp(log_mid), _Book(), rng)
        yield self._snapshot(book, self.start_at, 1)
        for step in itertools.count(1):
            at = self.start_at + timedelta(seconds=self.step_s * step)
            log_mid += self.mean_reversion * (anchor - log_mid) + rng.gauss(0.0, self.volatility)
            new_book = self._book(math.exp(log_mid), book, rng)
            for side, price, qty in self._prints_through(book, new_book):
                yield self._trade(side, price, qty, at, next(numbers))
            if step % self.snapshot_every == 0:
                yield self._snapshot(new_book, at, step + 1)
            else:
                yield self._delta(book, new_book, at, step + 1)
            for side, price, qty in self._prints_at_touch(new_book, rng):
                yield self._trade(side, price, qty, at, next(numbers))
            book = new_book

    def _book(self, mid: float, previous: _Book, rng: random.Random) -> _Book:
        spread = self.tick * rng.randint(1, 3)
        best_bid = quantize_down(Decimal(repr(mid)) - spread / 2, self.tick)
        best_ask = best_bid + spread
        grid = self.grid
        first_bid = _to_grid(best_bid - self.tick, grid, ROUND_FLOOR)
        first_ask = _to_grid(best_ask + self.tick, grid, ROUND_CEILING)
        bid_prices = [best_bid] + [first_bid - grid * i for i in range(self.levels - 1)]
        ask_prices = [best_ask] + [first_ask + grid * i for i in range(self.levels - 1)]
        book = _Book()
        for prices, levels, old in ((bid_prices, book.bids, previous.bids), (ask_prices, book.asks, previous.asks)):
            for depth, price in enumerate(p for p in prices if p > 0):
                # A level that is still there usually keeps its quantity; otherwise it is redrawn.
                keep = price in old and rng.random() < 0.8
                levels[price] = old[price] if keep else _draw_qty(rng, depth, self.lot)
        return book

    @staticmethod
    def _prints_through(old: _Book, new: _Book) -> list[_Print]:
        """The old levels the new touch moved past were taken by aggressors: buys up, sells down."""
        best_ask, best_bid = min(new.asks), max(new.bids)
        taken_asks = sorted(price for price in old.asks if price < best_ask)
        taken_bids = sorted((price for price in old.bids if price > best_bid), reverse=True)
        return [(OrderSide.BUY, price, old.asks[price]) for price in taken_asks] + [
            (OrderSide.SELL, price, old.bids[price]) for price in taken_bids
        ]

    def _prints_at_touch(self, book: _Book, rng: random.Random) -> list[_Print]:
        """Zero to two small trades at the touch (the displayed level stays: it is replenished)."""
        prints: list[_Print] = []
        for _ in range(rng.choice((0, 1, 1, 2))):
            side = OrderSide.BUY if rng.random() < 0.5 else OrderSide.SELL
            price = min(book.asks) if side is OrderSide.BUY else max(book.bids)
            shown = book.asks[price] if side is OrderSide.BUY else book.bids[price]
            qty = quantize_down(shown * Decimal(repr(rng.uniform(0.1, 0.6))), self.lot)
            if qty > 0:
                prints.append((side, price, qty))
        return prints

    def _trade(self, side: OrderSide, price: Decimal, qty: Decimal, at: datetime, number: int) -> Trade:
        return Trade(
            venue=SYNTHETIC_VENUE,
            symbol=self.symbol,
            trade_id=f"syn-{self.seed}-{int(self.start_at.timestamp())}-{number}",
            price=price,
            qty=qty,
            side=side,
            timestamp=at,
        )

    def _snapshot(self, book: _Book, at: datetime, sequence: int) -> BookSnapshot:
        return BookSnapshot(
            venue=SYNTHETIC_VENUE,
            symbol=self.symbol,
            bids=[Level(price=p, qty=book.bids[p]) for p in sorted(book.bids, reverse=True)],
            asks=[Level(price=p, qty=book.asks[p]) for p in sorted(book.asks)],
            timestamp=at,
            sequence=sequence,
        )

    def _delta(self, old: _Book, new: _Book, at: datetime, sequence: int) -> BookDelta:
        return BookDelta(
            venue=SYNTHETIC_VENUE,
            symbol=self.symbol,
            bids=_changes(old.bids, new.bids, reverse=True),
            asks=_changes(old.asks, new.asks, reverse=False),
            timestamp=at,
            sequence=sequence,
        )


def _changes(old: Mapping[Decimal, Decimal], new: Mapping[Decimal, Decimal], *, reverse: bool) -> list[Level]:
    """Levels that appeared or changed (new qty) and levels that went away (qty 0), best first."""
    prices = sorted(set(old) | set(new), reverse=reverse)
    return [Level(price=price, qty=new.get(price, Decimal(0))) for price in prices if new.get(price) != old.get(price)]


# Cross-asset SYNTHETIC markets (issue 14, item 6): BTC, ETH and a USD stablecoin, each its own seeded walk (not
# correlated with the others, not real data); the stablecoin is held near its peg by a strong pull back.
CROSS_ASSET_MARKETS: tuple[tuple[str, Decimal, float, Decimal, float], ...] = (
    # symbol, start price, volatility per step, tick, mean reversion
    ("BTC/USD", Decimal("60000"), 0.0003, Decimal("0.1"), 0.002),
    ("ETH/USD", Decimal("3000"), 0.0004, Decimal("0.01"), 0.002),
    ("USDT/USD", Decimal("1"), 0.00002, Decimal("0.0001"), 0.2),
)


@dataclass(frozen=True)
class MergedSource:
    """Several sources as one stream in time order (ties keep the sources' order); endless if any source is."""

    sources: Sequence[MarketDataSource]

    def messages(self) -> Iterator[MarketData]:
        """The sources' messages merged by timestamp."""
        return heapq.merge(*(source.messages() for source in self.sources), key=lambda message: message.timestamp)


def cross_asset_market(seed: int, start_at: datetime) -> MergedSource:
    """BTC/USD, ETH/USD and USDT/USD SYNTHETIC markets merged (seeds `seed`, `seed + 1`, `seed + 2`)."""
    return MergedSource(
        [
            SyntheticMarket(
                symbol=symbol,
                seed=seed + offset,
                start_price=price,
                start_at=start_at,
                volatility=volatility,
                tick=tick,
                mean_reversion=reversion,
            )
            for offset, (symbol, price, volatility, tick, reversion) in enumerate(CROSS_ASSET_MARKETS)
        ]
    )
