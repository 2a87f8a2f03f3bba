"""Use cases of the analytics service: stored market data by symbol and range, feed health, cross-asset correlations.

Ranges are [from, to): `to` defaults to now and `from` to `to` minus the route's default window; `from` after `to`,
or a window wider than the route allows, is a 422 naming the field; a symbol with nothing stored is a 404. Pages
are keyset pages in ascending time with an opaque cursor (URL-safe base64 of the last row's position).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import json
import math
import re
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.analytics import repository
from services.analytics.errors import InvalidQuery, UnknownSymbol
from services.analytics.schemas import (
    AnomalyRead,
    BookSnapshotRead,
    CandleInterval,
    CandleRead,
    Correlations,
    FeedHealth,
    LevelRead,
    MarketDataHealth,
    ReturnsInterval,
    TradeRead,
)
from shared.web import Page

# (default window, largest window) per kind of read.
TRADE_WINDOWS = (timedelta(hours=1), timedelta(days=1))
SNAPSHOT_WINDOWS = (timedelta(hours=1), timedelta(days=1))
CANDLE_WINDOWS: dict[CandleInterval, tuple[timedelta, timedelta]] = {
    CandleInterval.ONE_MINUTE: (timedelta(days=1), timedelta(days=7)),
    CandleInterval.ONE_HOUR: (timedelta(days=30), timedelta(days=366)),
    CandleInterval.ONE_DAY: (timedelta(days=365), timedelta(days=3_660)),
}
CORRELATION_WINDOWS: dict[ReturnsInterval, tuple[timedelta, timedelta]] = {
    ReturnsInterval.ONE_MINUTE: (timedelta(days=1), timedelta(days=7)),
    ReturnsInterval.ONE_HOUR: (timedelta(days=30), timedelta(days=366)),
}
MIN_POINTS = 3
_SEQUENCE = re.compile(r"[0-9]{1,18}")


@dataclass(frozen=True, slots=True)
class Range:
    """A checked [start, end) window."""

    start: datetime
    end: datetime


def resolve_range(
    start: datetime | None, end: datetime | None, now: datetime, windows: tuple[timedelta, timedelta]
) -> Range:
    """Fill the defaults, then refuse `from` after `to` and windows wider than the largest."""
    default, largest = windows
    end = end or now
    try:
        start = start or end - default
    except OverflowError:
        raise InvalidQuery("to", "too early to hold the default window; give from as well") from None
    if start > end:
        raise InvalidQuery("from", f"{start.isoformat()} is after to {end.isoformat()}")
    if end - start > largest:
        raise InvalidQuery("from", f"the window is wider than {largest} for one request; page through shorter ones")
    return Range(start, end)


def encode_cursor(position: repository.Position) -> str:
    """The opaque cursor of a position."""
    text = json.dumps([position[0].isoformat(), position[1], position[2]], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode()


def decode_cursor(cursor: str | None) -> repository.Position | None:
    """The position of a cursor this API returned; 422 naming `cursor` for anything else."""
    if cursor is None:
        return None
    try:
        at, venue, key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
        position = (datetime.fromisoformat(at), venue, key)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InvalidQuery("cursor", "not a cursor this API returned") from None
    if position[0].tzinfo is None or not all(_storable(text) for text in (venue, key)):
        raise InvalidQuery("cursor", "not a cursor this API returned")
    return position


def _storable(text: object) -> bool:
    # What PostgreSQL text can hold: no NUL, no lone surrogate; bounded like the stored keys.
    if not isinstance(text, str) or len(text) > 64 or "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _page(
    rows: Sequence[Any], limit: int, read: Callable[[Any], Any], position: Callable[[Any], repository.Position]
) -> Page[Any]:
    items = [read(row) for row in rows[:limit]]
    next_cursor = encode_cursor(position(rows[limit - 1])) if len(rows) > limit else None
    return Page(items=items, next_cursor=next_cursor)


def _levels(levels: list[list[str]]) -> list[LevelRead]:
    return [LevelRead(price=Decimal(price), qty=Decimal(qty)) for price, qty in levels]


def _correlation(xs: list[float], ys: list[float]) -> float | None:
    if len(xs) < MIN_POINTS:
        return None
    try:
        value = statistics.correlation(xs, ys)
    except statistics.StatisticsError:  # a constant series (a pegged stablecoin): undefined
        return None
    return round(value, 12) if math.isfinite(value) else None


class MarketDataQueries:
    """Reads of the stored market data, one short transaction each."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker

    async def _known(self, session: AsyncSession, symbol: str, field: str = "symbol") -> None:
        if not await repository.symbol_known(session, symbol):
            raise UnknownSymbol(symbol, field)

    async def trades(
        self, symbol: str, venue: str | None, window: Range, cursor: str | None, limit: int
    ) -> Page[TradeRead]:
        """A page of trades of `symbol` in the window."""
        after = decode_cursor(cursor)
        async with self._sessionmaker() as session:
            await self._known(session, symbol)
            rows = await repository.trades_page(session, symbol, venue, window.start, window.end, after, limit + 1)
        return _page(
            rows,
            limit,
            lambda r: TradeRead(
                venue=r.venue,
                symbol=r.instrument,
                trade_id=r.trade_id,
                traded_at=r.traded_at,
                price=r.price,
                quantity=r.quantity,
                side=r.side,
            ),
            lambda r: (r.traded_at, r.venue, r.trade_id),
        )

    async def candles(
        self, interval: CandleInterval, symbol: str, venue: str | None, window: Range, cursor: str | None, limit: int
    ) -> Page[CandleRead]:
        """A page of candles of `symbol` in the window."""
        after = decode_cursor(cursor)
        async with self._sessionmaker() as session:
            await self._known(session, symbol)
            rows = await repository.candles_page(
                session, interval.value, symbol, venue, window.start, window.end, after, limit + 1
            )
        return _page(
            rows,
            limit,
            lambda r: CandleRead(
                venue=r.venue,
                symbol=r.instrument,
                bucket=r.bucket,
                open=r.open,
                high=r.high,
                low=r.low,
                close=r.close,
                volume=r.volume,
                notional=r.notional,
                trade_count=r.trade_count,
            ),
            lambda r: (r.bucket, r.venue, ""),
        )

    async def snapshots(
        self, symbol: str, venue: str | None, window: Range, cursor: str | None, limit: int
    ) -> Page[BookSnapshotRead]:
        """A page of stored book snapshots of `symbol` in the window."""
        after = decode_cursor(cursor)
        if after is not None and _SEQUENCE.fullmatch(after[2]) is None:
            raise InvalidQuery("cursor", "not a cursor this API returned")
        async with self._sessionmaker() as session:
            await self._known(session, symbol)
            rows = await repository.snapshots_page(session, symbol, venue, window.start, window.end, after, limit + 1)
        return _page(
            rows,
            limit,
            lambda r: BookSnapshotRead(
                venue=r.venue,
                symbol=r.instrument,
                taken_at=r.taken_at,
                sequence=r.sequence,
                reason=r.reason,
                bids=_levels(r.bids),
                asks=_levels(r.asks),
            ),
            lambda r: (r.taken_at, r.venue, str(r.sequence)),
        )

    async def health(self, now: datetime, stale_after_s: int, window_minutes: int) -> MarketDataHealth:
        """Staleness and empty minutes of every feed."""
        async with self._sessionmaker() as session:
            rows = await repository.feed_health(session, now, timedelta(minutes=window_minutes))
        feeds = []
        for r in rows:
            staleness = (now - r.last_trade_at).total_seconds() if r.last_trade_at is not None else None
            feeds.append(
                FeedHealth(
                    venue=r.venue,
                    symbol=r.instrument,
                    last_trade_at=r.last_trade_at,
                    last_snapshot_at=r.last_snapshot_at,
                    staleness_s=staleness,
                    stale=staleness is None or staleness > stale_after_s,
                    empty_minutes=max(window_minutes - int(r.traded_minutes), 0),
                )
            )
        return MarketDataHealth(checked_at=now, stale_after_s=stale_after_s, window_minutes=window_minutes, feeds=feeds)

    async def anomalies(self, accounts: Sequence[str] | None, cursor: int, limit: int) -> Page[AnomalyRead]:
        """A page of the anomaly log, newest first: market-wide ones and those of `accounts` (None: all)."""
        async with self._sessionmaker() as session:
            rows = await repository.anomalies_page(session, accounts, cursor or None, limit + 1)
        items = [
            AnomalyRead(
                anomaly_id=r.anomaly_id,
                kind=r.kind,
                venue=r.venue,
                symbol=r.symbol,
                account_id=r.account_id,
                observed_at=r.observed_at,
                detected_at=r.detected_at,
                magnitude=r.magnitude,
                detail=r.detail,
            )
            for r in rows[:limit]
        ]
        return Page(items=items, next_cursor=str(rows[limit - 1].id) if len(rows) > limit else None)

    async def correlations(
        self, interval: ReturnsInterval, symbols: Sequence[str], venue: str | None, window: Range
    ) -> Correlations:
        """Correlations of log returns of closes over the buckets every symbol has."""
        async with self._sessionmaker() as session:
            for symbol in symbols:
                await self._known(session, symbol, "symbols")
                venues = await repository.venues_of(session, interval.value, symbol, window.start, window.end)
                if venue is None and len(venues) > 1:
                    raise InvalidQuery("venue", f"{symbol} has candles on several venues in the window; name one")
            rows = await repository.closes(session, interval.value, symbols, venue, window.start, window.end)
        by_bucket: dict[datetime, dict[str, Decimal]] = defaultdict(dict)
        for symbol, bucket, close in rows:
            by_bucket[bucket][symbol] = close
        aligned = [prices for _, prices in sorted(by_bucket.items()) if len(prices) == len(symbols)]
        returns: dict[str, list[float]] = {
            s: [math.log(b[s] / a[s]) for a, b in itertools.pairwise(aligned)] for s in symbols
        }
        matrix = {a: {b: _correlation(returns[a], returns[b]) for b in symbols} for a in symbols}
        points = max(len(aligned) - 1, 0)
        return Correlations(
            interval=interval, start=window.start, end=window.end, points=points, symbols=list(symbols), matrix=matrix
        )
