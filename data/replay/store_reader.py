"""Backtest input from the market data store (`marketdata` schema, shared/db/marketdata.py): a range of trades and book
snapshots, or of candles, for some symbols of one venue, read in keyset-paged chunks and returned as the engine's
streams (one per symbol, in time order).

A range is never silently bridged: a symbol with nothing stored in the range, or a hole longer than `max_gap`
(between two stored events, or between the range's edges and its first or last event), is a `StoreRangeError`
naming the symbol and the hole. Candles come from the candle views, which `aether data refresh-aggregates` fills.
"""

from __future__ import annotations

import heapq
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any, overload

import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from shared.backtest.bars import BacktestInputError, Bar
from shared.config import AetherSettings
from shared.db import create_engine
from shared.db import marketdata as md
from shared.domain.types import OrderSide
from shared.marketdata import BookSnapshot, Level, MarketData, Trade

Executor = AsyncSession | AsyncConnection
CHUNK = 10_000
CANDLE_WIDTHS = {"1m": timedelta(minutes=1), "1h": timedelta(hours=1), "1d": timedelta(days=1)}


class StoreRangeError(BacktestInputError):
    """The stored range cannot be replayed as asked: empty, gapped, or a stored row that breaks the message schema."""


class StoreUnreachable(BacktestInputError):
    """The store's database cannot be read; names only the driver's error (never the connection string)."""


@dataclass(frozen=True, slots=True)
class StoreRange:
    """What to read: one venue's `symbols` over [start, end)."""

    venue: str
    symbols: tuple[str, ...]
    start: datetime
    end: datetime
    max_gap: timedelta = timedelta(minutes=10)

    def __post_init__(self) -> None:
        if not self.symbols:
            raise StoreRangeError("--symbol: give at least one symbol")
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise StoreRangeError("--start/--end: give a UTC offset")
        if self.end <= self.start:
            raise StoreRangeError(f"--end {self.end.isoformat()} is not after --start {self.start.isoformat()}")


def _check_gaps(what: str, rng: StoreRange, times: Sequence[datetime], allowed: timedelta) -> None:
    if not times:
        raise StoreRangeError(
            f"{what}: no data stored for venue {rng.venue} between {rng.start.isoformat()} and {rng.end.isoformat()}"
        )
    edges = [rng.start, *times, rng.end]
    for before, after in pairwise(edges):
        if after - before > allowed:
            raise StoreRangeError(
                f"{what}: gap from {before.isoformat()} to {after.isoformat()} ({after - before}) exceeds {allowed}"
            )


async def _pages(db: Executor, query: sa.Select[Any], keys: Sequence[sa.ColumnElement[Any]]) -> AsyncIterator[Any]:
    """Rows of `query` ordered by `keys`, read `CHUNK` at a time (keyset paging: no OFFSET, no long cursor)."""
    last: tuple[Any, ...] | None = None
    while True:
        page = query.order_by(*keys).limit(CHUNK)
        if last is not None:
            page = page.where(sa.tuple_(*keys) > sa.tuple_(*(sa.literal(v) for v in last)))
        rows = (await db.execute(page)).all()
        for row in rows:
            yield row
        if len(rows) < CHUNK:
            return
        last = tuple(rows[-1][-len(keys) :])


async def _trades(db: Executor, rng: StoreRange, symbol: str) -> list[Trade]:
    t = md.trades
    query = sa.select(t.c.price, t.c.quantity, t.c.side, t.c.traded_at, t.c.trade_id).where(
        t.c.venue == rng.venue, t.c.instrument == symbol, t.c.traded_at >= rng.start, t.c.traded_at < rng.end
    )
    out: list[Trade] = []
    async for price, quantity, side, at, trade_id in _pages(db, query, (t.c.traded_at, t.c.trade_id)):
        try:
            out.append(
                Trade(
                    venue=rng.venue,
                    symbol=symbol,
                    trade_id=trade_id,
                    price=price,
                    qty=quantity,
                    side=OrderSide(side),
                    timestamp=at,
                )
            )
        except (ValidationError, ValueError) as exc:
            raise StoreRangeError(f"{symbol}: stored trade {trade_id} at {at.isoformat()} is unusable: {exc}") from None
    return out


def _levels(raw: Sequence[Sequence[str]]) -> list[Level]:
    return [Level(price=Decimal(price), qty=Decimal(qty)) for price, qty in raw]


async def _snapshots(db: Executor, rng: StoreRange, symbol: str) -> list[BookSnapshot]:
    b = md.book_snapshots
    query = sa.select(b.c.bids, b.c.asks, b.c.taken_at, b.c.sequence).where(
        b.c.venue == rng.venue, b.c.instrument == symbol, b.c.taken_at >= rng.start, b.c.taken_at < rng.end
    )
    out: list[BookSnapshot] = []
    async for bids, asks, at, sequence in _pages(db, query, (b.c.taken_at, b.c.sequence)):
        try:
            out.append(
                BookSnapshot(
                    venue=rng.venue,
                    symbol=symbol,
                    bids=_levels(bids),
                    asks=_levels(asks),
                    timestamp=at,
                    sequence=sequence,
                )
            )
        except (ValidationError, ValueError, ArithmeticError) as exc:
            raise StoreRangeError(f"{symbol}: stored book snapshot at {at.isoformat()} is unusable: {exc}") from None
    return out


def _time_of(message: MarketData) -> datetime:
    return message.timestamp


async def load_market_data(db: Executor, rng: StoreRange, *, books: bool = True) -> list[list[MarketData]]:
    """Trades (and book snapshots) of each symbol in the range, one time-ordered stream per symbol."""
    streams: list[list[MarketData]] = []
    for symbol in rng.symbols:
        trades = await _trades(db, rng, symbol)
        snapshots = await _snapshots(db, rng, symbol) if books else []
        ordered: list[Sequence[MarketData]] = [snapshots, trades]
        merged: list[MarketData] = list(heapq.merge(*ordered, key=_time_of))
        _check_gaps(symbol, rng, [m.timestamp for m in merged], rng.max_gap)
        streams.append(merged)
    return streams


async def load_bars(db: Executor, rng: StoreRange, interval: str) -> list[list[Bar]]:
    """Candles of each symbol from the `interval` candle view (1m, 1h, 1d), one stream per symbol."""
    width = CANDLE_WIDTHS.get(interval)
    if width is None:
        raise StoreRangeError(f"candles: no stored interval {interval!r} (stored: {', '.join(CANDLE_WIDTHS)})")
    c = md.candle_view(interval)
    streams: list[list[Bar]] = []
    for symbol in rng.symbols:
        query = sa.select(c.c.open, c.c.high, c.c.low, c.c.close, c.c.volume, c.c.bucket).where(
            c.c.venue == rng.venue, c.c.instrument == symbol, c.c.bucket >= rng.start, c.c.bucket < rng.end
        )
        bars = [
            Bar(symbol, bucket, bucket + width, o, h, low, close, volume)
            async for o, h, low, close, volume, bucket in _pages(db, query, (c.c.bucket,))
        ]
        # A candle stands for its whole bucket: the hole is measured between bucket ends and starts.
        _check_gaps(f"{symbol} {interval} candles", rng, [b.start for b in bars], max(rng.max_gap, width))
        streams.append(bars)
    return streams


@overload
async def read_store(
    settings: AetherSettings, rng: StoreRange, candles: str, *, application_name: str
) -> list[list[Bar]]: ...
@overload
async def read_store(
    settings: AetherSettings, rng: StoreRange, candles: None, *, application_name: str
) -> list[list[MarketData]]: ...
async def read_store(
    settings: AetherSettings, rng: StoreRange, candles: str | None, *, application_name: str
) -> list[list[MarketData]] | list[list[Bar]]:
    """`rng` on its own connection: the `candles` view (1m, 1h, 1d) as bars, else trades and book snapshots.

    Fails closed: a database that cannot be read is `StoreUnreachable`, an empty or gapped range `StoreRangeError`.
    """
    engine = create_engine(settings, application_name=application_name)
    try:
        async with engine.connect() as connection:
            if candles is not None:
                return await load_bars(connection, rng, candles)
            return await load_market_data(connection, rng)
    except DBAPIError as exc:
        raise StoreUnreachable(f"cannot read the market data store ({type(exc.orig).__name__})") from None
    finally:
        await engine.dispose()
