"""Every SQL statement of the backfills: CoinGecko points, sentiment features and the checkpoints that make the
backfills resumable. Trades go through the market-data store (`data.ingest.store.insert_trades`), the one place
trades are written.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from data.ingest import store
from shared.domain.types import OrderSide
from shared.marketdata import Trade


@dataclass(frozen=True, slots=True)
class TradeRow:
    """One public trade as `marketdata.trades` stores it; `side` is the aggressor's."""

    venue: str
    instrument: str
    trade_id: str
    traded_at: datetime
    price: Decimal
    quantity: Decimal
    side: str


@dataclass(frozen=True, slots=True)
class PricePoint:
    """One CoinGecko sample: price, market cap and 24h volume at `at` (the last two may be missing)."""

    at: datetime
    price: Decimal
    market_cap: Decimal | None
    volume: Decimal | None


@dataclass(frozen=True, slots=True)
class HourFeatures:
    """Sentiment of one cashtag over one hour."""

    bucket_start: datetime
    post_count: int
    scored_posts: int
    mean_compound: Decimal | None
    positive_share: Decimal | None
    negative_share: Decimal | None


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """Where a backfill of one source, subject and range stands."""

    cursor: str
    pages: int
    rows_written: int
    gaps: int
    completed: bool


async def insert_trades(connection: AsyncConnection, trades: Sequence[TradeRow]) -> int:
    """Insert backfilled trades through the store, skipping those already stored; return how many were new."""
    messages = [
        Trade(
            venue=t.venue,
            symbol=t.instrument,
            trade_id=t.trade_id,
            price=t.price,
            qty=t.quantity,
            side=OrderSide(t.side),
            timestamp=t.traded_at,
        )
        for t in trades
    ]
    return await store.insert_trades(connection, messages)


async def insert_price_points(connection: AsyncConnection, coin: str, vs: str, points: Sequence[PricePoint]) -> int:
    """Insert CoinGecko points, skipping those already stored; return how many were new."""
    if not points:
        return 0
    result = await connection.execute(
        text(
            "INSERT INTO marketdata.coingecko_prices (coin, vs, at, price, market_cap, volume) "
            "SELECT :coin, :vs, * FROM unnest(CAST(:at AS timestamptz[]), CAST(:price AS numeric[]), "
            "CAST(:market_cap AS numeric[]), CAST(:volume AS numeric[])) ON CONFLICT DO NOTHING"
        ),
        {
            "coin": coin,
            "vs": vs,
            "at": [p.at for p in points],
            "price": [p.price for p in points],
            "market_cap": [p.market_cap for p in points],
            "volume": [p.volume for p in points],
        },
    )
    return int(result.rowcount)


async def load_checkpoint(connection: AsyncConnection, source: str, subject: str, range_key: str) -> Checkpoint | None:
    """The checkpoint of this backfill, None before its first page."""
    row = (
        await connection.execute(
            text(
                "SELECT cursor, pages, rows_written, gaps, completed_at IS NOT NULL FROM marketdata.backfill_checkpoints "
                "WHERE source = :source AND subject = :subject AND range_key = :range_key"
            ),
            {"source": source, "subject": subject, "range_key": range_key},
        )
    ).one_or_none()
    if row is None:
        return None
    return Checkpoint(cursor=row[0], pages=row[1], rows_written=row[2], gaps=row[3], completed=row[4])


async def save_checkpoint(
    connection: AsyncConnection,
    source: str,
    subject: str,
    range_key: str,
    *,
    cursor: str,
    new_rows: int,
    new_gaps: int,
    completed: bool,
) -> None:
    """Advance the checkpoint by one page; call it in the transaction that wrote the page's rows."""
    await connection.execute(
        text(
            "INSERT INTO marketdata.backfill_checkpoints AS c "
            "(source, subject, range_key, cursor, pages, rows_written, gaps, completed_at, updated_at) "
            "VALUES (:source, :subject, :range_key, :cursor, 1, :rows, :gaps, "
            "CASE WHEN :completed THEN now() END, now()) "
            "ON CONFLICT (source, subject, range_key) DO UPDATE SET cursor = excluded.cursor, "
            "pages = c.pages + 1, rows_written = c.rows_written + excluded.rows_written, "
            "gaps = c.gaps + excluded.gaps, completed_at = excluded.completed_at, updated_at = now()"
        ),
        {
            "source": source,
            "subject": subject,
            "range_key": range_key,
            "cursor": cursor,
            "rows": new_rows,
            "gaps": new_gaps,
            "completed": completed,
        },
    )


async def upsert_sentiment(
    connection: AsyncConnection, source: str, cashtag: str, rows: Sequence[HourFeatures]
) -> None:
    """Upsert the hourly features (a later run over the same hours replaces them)."""
    for row in rows:
        await connection.execute(
            text(
                "INSERT INTO marketdata.sentiment_features (source, cashtag, bucket_start, post_count, scored_posts, "
                "mean_compound, positive_share, negative_share) VALUES (:source, :cashtag, :bucket_start, :post_count, "
                ":scored_posts, :mean_compound, :positive_share, :negative_share) "
                "ON CONFLICT (source, cashtag, bucket_start) DO UPDATE SET post_count = excluded.post_count, "
                "scored_posts = excluded.scored_posts, mean_compound = excluded.mean_compound, "
                "positive_share = excluded.positive_share, negative_share = excluded.negative_share"
            ),
            {
                "source": source,
                "cashtag": cashtag,
                "bucket_start": row.bucket_start,
                "post_count": row.post_count,
                "scored_posts": row.scored_posts,
                "mean_compound": row.mean_compound,
                "positive_share": row.positive_share,
                "negative_share": row.negative_share,
            },
        )
