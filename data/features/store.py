"""The feature table `marketdata.features` (migration 0031) and the stored inputs of the batch engine.

`read_inputs` is the one place that knows how trades and book states are stored: `marketdata.trades` (0003) and
`marketdata.book_snapshots` (0029, `shared/db/marketdata.py`), levels as `[["60000.1", "0.5"], ...]` best first. A malformed row stops the read with FeatureInputError naming the table, the row and the field.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import RowMapping
from sqlalchemy.ext.asyncio import AsyncSession

from data.features import batch
from data.features.definitions import (
    BAR_SECONDS,
    BAR_US,
    FEATURES,
    HISTORY,
    NOTIONAL_SCALE,
    QTY_SCALE,
    BookRow,
    FeatureInputError,
    TradeRow,
    book_row,
    scaled,
    to_us,
)
from data.features.stream import FeatureBar
from shared.contracts.features import FeaturesComputed
from shared.db import marketdata as md
from shared.db.base import NAMING_CONVENTION
from shared.marketdata import BookSnapshot

TS = sa.DateTime(timezone=True)
metadata = sa.MetaData(schema="marketdata", naming_convention=NAMING_CONVENTION)
features = sa.Table(
    "features",
    metadata,
    sa.Column("venue", sa.Text, primary_key=True),
    sa.Column("instrument", sa.Text, primary_key=True),
    sa.Column("bar_seconds", sa.Integer, primary_key=True),
    sa.Column("bar_start", TS, primary_key=True),
    *(sa.Column(name, sa.Double, nullable=True) for name in FEATURES),
    sa.Column("computed_at", TS, nullable=False, server_default=sa.func.now()),
)
_trades = sa.table(
    "trades",
    sa.column("venue"),
    sa.column("instrument"),
    sa.column("trade_id"),
    sa.column("traded_at"),
    sa.column("price"),
    sa.column("quantity"),
    sa.column("side"),
    schema="marketdata",
)


def from_us(value: int) -> datetime:
    """The aware UTC datetime of `value` microseconds since the epoch (exact)."""
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=value)


def to_message(bar: FeatureBar) -> FeaturesComputed:
    """The `analytics.feature-events.v1` message of a closed bar."""
    return FeaturesComputed(
        venue=bar.venue,
        symbol=bar.symbol,
        bar_start=from_us(bar.bar_us),
        bar_seconds=BAR_SECONDS,
        **{name: bar.values[name] for name in FEATURES},
    )


async def save_bars(session: AsyncSession, bars: Sequence[FeatureBar]) -> None:
    """Upsert the rows of `bars` (a recompute replaces what the stream wrote, and the reverse)."""
    if not bars:
        return
    rows = [
        {
            "venue": bar.venue,
            "instrument": bar.symbol,
            "bar_seconds": BAR_SECONDS,
            "bar_start": from_us(bar.bar_us),
            **{name: bar.values[name] for name in FEATURES},
        }
        for bar in bars
    ]
    statement = pg_insert(features).values(rows)
    await session.execute(
        statement.on_conflict_do_update(
            constraint="pk_features",
            set_={**{name: statement.excluded[name] for name in FEATURES}, "computed_at": sa.func.now()},
        )
    )


def _level_objects(levels: Any) -> Any:
    # The store keeps a level as [price, qty] (data/ingest/store.py); anything else is left for validation to name.
    if not isinstance(levels, list):
        return levels
    return [dict(zip(("price", "qty"), level, strict=False)) if isinstance(level, list) else level for level in levels]


def _snapshot_row(venue: str, symbol: str, captured_at: datetime, bids: Any, asks: Any) -> BookRow | None:
    """The book state of one stored snapshot; FeatureInputError naming the row and the field when it is malformed."""
    try:
        snapshot = BookSnapshot.model_validate(
            {
                "venue": venue,
                "symbol": symbol,
                "bids": _level_objects(bids),
                "asks": _level_objects(asks),
                "timestamp": captured_at,
                "sequence": 0,
            }
        )
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "<row>"
        reason = str(first["msg"]).removeprefix("Value error, ")
        raise FeatureInputError(
            f"marketdata.book_snapshots {venue} {symbol} taken_at {captured_at.isoformat()}: {where}: {reason}"
        ) from None
    levels = [[(level.price, level.qty) for level in side] for side in (snapshot.bids, snapshot.asks)]
    return book_row(venue, symbol, to_us(captured_at), levels[0], levels[1])


async def _book_states(session: AsyncSession, venue: str, symbol: str, start: datetime, end: datetime) -> list[BookRow]:
    """Book states of [start, end) from the snapshot table, in time order."""
    result = await session.execute(
        sa.select(md.book_snapshots.c.taken_at, md.book_snapshots.c.bids, md.book_snapshots.c.asks)
        .where(
            md.book_snapshots.c.venue == venue,
            md.book_snapshots.c.instrument == symbol,
            md.book_snapshots.c.taken_at >= start,
            md.book_snapshots.c.taken_at < end,
        )
        .order_by(md.book_snapshots.c.taken_at, md.book_snapshots.c.sequence)
    )
    states = [_snapshot_row(venue, symbol, row.taken_at, row.bids, row.asks) for row in result]
    return [state for state in states if state is not None]


def _trade_row(venue: str, symbol: str, row: Any) -> TradeRow:
    try:
        return TradeRow(
            venue=venue,
            symbol=symbol,
            ts_us=to_us(row.traded_at),
            trade_id=row.trade_id,
            price=float(row.price),
            qty=scaled(row.quantity, QTY_SCALE, "qty"),
            notional=scaled(row.price * row.quantity, NOTIONAL_SCALE, "notional"),
            buy=row.side == "buy",
        )
    except FeatureInputError as exc:
        raise FeatureInputError(f"marketdata.trades {venue} {symbol} trade_id {row.trade_id}: {exc}") from None


async def _trade_rows(session: AsyncSession, venue: str, symbol: str, start: datetime, end: datetime) -> list[TradeRow]:
    result = await session.execute(
        sa.select(_trades.c.trade_id, _trades.c.traded_at, _trades.c.price, _trades.c.quantity, _trades.c.side).where(
            _trades.c.venue == venue,
            _trades.c.instrument == symbol,
            _trades.c.traded_at >= start,
            _trades.c.traded_at < end,
        )
    )
    return [_trade_row(venue, symbol, row) for row in result]


async def read_inputs(
    session: AsyncSession, venue: str, symbol: str, start: datetime, end: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The batch engine's trade and book frames of [start, end) (NUMERIC values normalized to exact Decimals)."""
    return (
        batch.trades_frame(await _trade_rows(session, venue, symbol, start, end)),
        batch.books_frame(await _book_states(session, venue, symbol, start, end)),
    )


async def recompute(session: AsyncSession, venue: str, symbol: str, start: datetime, end: datetime) -> int:
    """Recompute and upsert the bars of [start, end) with the batch engine (reading HISTORY bars before `start`
    so the windows are full); returns how many bars it wrote."""
    start_us = to_us(start) - to_us(start) % BAR_US
    warmup = from_us(start_us - HISTORY * BAR_US)
    frame = batch.compute(*await read_inputs(session, venue, symbol, warmup, end))
    frame = frame.filter(pl.col("bar_us") >= start_us)
    bars = [
        FeatureBar(row["venue"], row["symbol"], row["bar_us"], {name: row[name] for name in FEATURES})
        for row in frame.iter_rows(named=True)
    ]
    await save_bars(session, bars)
    return len(bars)


async def query(
    session: AsyncSession, symbol: str, start: datetime, end: datetime, *, venue: str | None, limit: int
) -> list[RowMapping]:
    """Stored features of `symbol` with `start <= bar_start < end`, oldest first, at most `limit` rows."""
    statement = sa.select(features).where(
        features.c.instrument == symbol, features.c.bar_start >= start, features.c.bar_start < end
    )
    if venue is not None:
        statement = statement.where(features.c.venue == venue)
    statement = statement.order_by(features.c.bar_start, features.c.venue).limit(limit)
    return list((await session.execute(statement)).mappings())


async def known(session: AsyncSession, venue: str, symbol: str) -> bool:
    """Whether any feature row of (venue, symbol) is stored."""
    statement = sa.select(sa.literal(1)).where(features.c.venue == venue, features.c.instrument == symbol).limit(1)
    return (await session.execute(statement)).first() is not None
