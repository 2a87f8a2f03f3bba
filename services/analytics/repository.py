"""Every SQL statement of the analytics service: reads of the `marketdata` schema (its tables are defined once, in
shared/db/marketdata.py; data/ingest/store.py holds the writes). Pages are keyset pages in ascending time."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db import marketdata as md
from shared.db.base import Money

SCHEMA = "analytics"

# The keyset position of the last row of a page: (time, venue, tiebreak).
Position = tuple[datetime, str, str]


async def symbol_known(session: AsyncSession, symbol: str) -> bool:
    """True when a trade or a book snapshot of `symbol` is stored."""
    trades = sa.select(md.trades.c.instrument).where(md.trades.c.instrument == symbol).limit(1)
    books = sa.select(md.book_snapshots.c.instrument).where(md.book_snapshots.c.instrument == symbol).limit(1)
    query = sa.select(sa.or_(sa.exists(trades), sa.exists(books)))
    return bool(await session.scalar(query))


def _window(time_column: Any, start: datetime, end: datetime) -> Any:
    return sa.and_(time_column >= start, time_column < end)


async def trades_page(
    session: AsyncSession,
    symbol: str,
    venue: str | None,
    start: datetime,
    end: datetime,
    after: Position | None,
    limit: int,
) -> Sequence[sa.Row[Any]]:
    """Up to `limit` trades of `symbol` in [start, end), after the position `after`."""
    t = md.trades
    query = sa.select(t).where(t.c.instrument == symbol, _window(t.c.traded_at, start, end))
    if venue is not None:
        query = query.where(t.c.venue == venue)
    if after is not None:
        query = query.where(sa.tuple_(t.c.traded_at, t.c.venue, t.c.trade_id) > sa.tuple_(*after))
    query = query.order_by(t.c.traded_at, t.c.venue, t.c.trade_id).limit(limit)
    return (await session.execute(query)).all()


async def candles_page(
    session: AsyncSession,
    interval: str,
    symbol: str,
    venue: str | None,
    start: datetime,
    end: datetime,
    after: Position | None,
    limit: int,
) -> Sequence[sa.Row[Any]]:
    """Up to `limit` candles of `symbol` whose bucket starts in [start, end), after the position `after`."""
    c = md.candle_view(interval)
    query = sa.select(c).where(c.c.instrument == symbol, _window(c.c.bucket, start, end))
    if venue is not None:
        query = query.where(c.c.venue == venue)
    if after is not None:
        query = query.where(sa.tuple_(c.c.bucket, c.c.venue) > sa.tuple_(after[0], after[1]))
    query = query.order_by(c.c.bucket, c.c.venue).limit(limit)
    return (await session.execute(query)).all()


async def snapshots_page(
    session: AsyncSession,
    symbol: str,
    venue: str | None,
    start: datetime,
    end: datetime,
    after: Position | None,
    limit: int,
) -> Sequence[sa.Row[Any]]:
    """Up to `limit` book snapshots of `symbol` in [start, end), after the position `after`."""
    b = md.book_snapshots
    query = sa.select(b).where(b.c.instrument == symbol, _window(b.c.taken_at, start, end))
    if venue is not None:
        query = query.where(b.c.venue == venue)
    if after is not None:
        query = query.where(
            sa.tuple_(b.c.taken_at, b.c.venue, b.c.sequence) > sa.tuple_(after[0], after[1], int(after[2]))
        )
    query = query.order_by(b.c.taken_at, b.c.venue, b.c.sequence).limit(limit)
    return (await session.execute(query)).all()


async def venues_of(session: AsyncSession, interval: str, symbol: str, start: datetime, end: datetime) -> list[str]:
    """The venues with candles of `symbol` in [start, end)."""
    c = md.candle_view(interval)
    query = sa.select(c.c.venue).where(c.c.instrument == symbol, _window(c.c.bucket, start, end)).distinct()
    return list((await session.scalars(query)).all())


async def closes(
    session: AsyncSession, interval: str, symbols: Sequence[str], venue: str | None, start: datetime, end: datetime
) -> list[tuple[str, datetime, Decimal]]:
    """(symbol, bucket, close) of every candle of `symbols` in [start, end), by bucket."""
    c = md.candle_view(interval)
    query = sa.select(c.c.instrument, c.c.bucket, c.c.close).where(
        c.c.instrument.in_(list(symbols)), _window(c.c.bucket, start, end)
    )
    if venue is not None:
        query = query.where(c.c.venue == venue)
    return [(r[0], r[1], r[2]) for r in (await session.execute(query.order_by(c.c.bucket))).all()]


async def feed_health(session: AsyncSession, now: datetime, window: timedelta) -> Sequence[sa.Row[Any]]:
    """Per venue + symbol (from the daily candles and the window's trades): last trade, last snapshot, and how many
    distinct minutes of the window had trades."""
    query = sa.text(
        "WITH feeds AS ("  # noqa: S608 - the schema name is a constant; values are bind parameters
        f" SELECT venue, instrument FROM {md.SCHEMA}.candles_1d"
        f" UNION SELECT venue, instrument FROM {md.SCHEMA}.trades WHERE traded_at >= :since"
        f" UNION SELECT venue, instrument FROM {md.SCHEMA}.book_snapshots WHERE taken_at >= :since)"
        " SELECT f.venue, f.instrument,"
        f"  (SELECT max(traded_at) FROM {md.SCHEMA}.trades t"
        "    WHERE t.instrument = f.instrument AND t.venue = f.venue) AS last_trade_at,"
        f"  (SELECT max(taken_at) FROM {md.SCHEMA}.book_snapshots b"
        "    WHERE b.instrument = f.instrument AND b.venue = f.venue) AS last_snapshot_at,"
        "  (SELECT count(DISTINCT date_trunc('minute', traded_at))"
        f"    FROM {md.SCHEMA}.trades t WHERE t.instrument = f.instrument AND t.venue = f.venue"
        "    AND t.traded_at >= :since AND t.traded_at < :now) AS traded_minutes"
        " FROM feeds f ORDER BY f.venue, f.instrument"
    )
    return (await session.execute(query, {"since": now - window, "now": now})).all()


_METADATA = sa.MetaData(schema=SCHEMA)
anomalies = sa.Table(
    "anomalies",
    _METADATA,
    sa.Column("id", sa.BigInteger, primary_key=True),
    sa.Column("anomaly_id", sa.Text, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("venue", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("account_id", sa.Text),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("magnitude", Money, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)


async def recent_closes(session: AsyncSession, since: datetime) -> list[Any]:
    """(venue, symbol, bucket, close) of every 1-minute candle from `since`, by feed and bucket."""
    c = md.candle_view("1m")
    query = (
        sa.select(c.c.venue, c.c.instrument, c.c.bucket, c.c.close)
        .where(c.c.bucket >= since)
        .order_by(c.c.venue, c.c.instrument, c.c.bucket)
    )
    return list((await session.execute(query)).all())


async def record_anomalies(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert anomalies not seen before (same kind, feed, account and observed time); return the new anomaly ids."""
    if not rows:
        return set()
    # The key is (kind, venue, symbol, account, observed_at): migration 0034's unique index.
    statement = insert(anomalies).on_conflict_do_nothing().returning(anomalies.c.anomaly_id)
    return set((await session.execute(statement, list(rows))).scalars().all())


async def anomalies_page(
    session: AsyncSession, accounts: Sequence[str] | None, after_id: int | None, limit: int
) -> Sequence[sa.Row[Any]]:
    """Anomalies, newest first, that are market-wide or of `accounts` (None: every account)."""
    a = anomalies
    query = sa.select(a).order_by(a.c.id.desc()).limit(limit)
    if accounts is not None:
        query = query.where(sa.or_(a.c.account_id.is_(None), a.c.account_id.in_(list(accounts))))
    if after_id is not None:
        query = query.where(a.c.id < after_id)
    return (await session.execute(query)).all()


async def crossed_book_quarantine(session: AsyncSession, since: datetime, reason_prefix: str) -> list[Any]:
    """Quarantined records refused for a crossed book since `since` (raw envelope bytes, when)."""
    q = md.quarantine
    query = (
        sa.select(q.c.raw, q.c.quarantined_at)
        .where(q.c.quarantined_at >= since, q.c.reason.contains(reason_prefix, autoescape=True))
        .order_by(q.c.id)
    )
    return list((await session.execute(query)).all())


async def book_at(session: AsyncSession, symbol: str, at: datetime, oldest: datetime) -> Any:
    """The newest stored book snapshot of `symbol` (any venue) taken in [oldest, at]."""
    b = md.book_snapshots
    query = (
        sa.select(b.c.venue, b.c.taken_at, b.c.bids, b.c.asks)
        .where(b.c.instrument == symbol, b.c.taken_at <= at, b.c.taken_at >= oldest)
        .order_by(b.c.taken_at.desc(), b.c.sequence.desc())
        .limit(1)
    )
    return (await session.execute(query)).first()


order_outcomes = sa.Table(
    "order_outcomes",
    _METADATA,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("filled", sa.Boolean, nullable=False),
    sa.Column("closed", sa.Boolean, nullable=False),
)
fill_rate_episodes = sa.Table(
    "fill_rate_episodes",
    _METADATA,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("low_since", sa.DateTime(timezone=True), nullable=False),
)


async def record_outcome(
    session: AsyncSession, order_id: str, account_id: str, symbol: str, at: datetime, *, filled: bool, closed: bool
) -> None:
    """Note an order's submission (both flags false), a fill or its end; the flags only ever turn true."""
    o = order_outcomes
    statement = insert(o).values(
        order_id=order_id, account_id=account_id, symbol=symbol, submitted_at=at, filled=filled, closed=closed
    )
    statement = statement.on_conflict_do_update(
        index_elements=[o.c.order_id],
        set_={"filled": o.c.filled | statement.excluded.filled, "closed": o.c.closed | statement.excluded.closed},
    )
    await session.execute(statement)


async def fill_rate(session: AsyncSession, account_id: str, symbol: str, since: datetime) -> tuple[int, int]:
    """(orders submitted since `since` whose outcome is known, how many of them got a fill)."""
    o = order_outcomes
    query = sa.select(sa.func.count(), sa.func.count().filter(o.c.filled)).where(
        o.c.account_id == account_id, o.c.symbol == symbol, o.c.submitted_at >= since, o.c.filled | o.c.closed
    )
    row = (await session.execute(query)).one()
    return int(row[0]), int(row[1])


async def open_fill_rate_episode(session: AsyncSession, account_id: str, symbol: str, at: datetime) -> bool:
    """Start a low fill-rate episode; False when one is already open."""
    statement = (
        insert(fill_rate_episodes)
        .values(account_id=account_id, symbol=symbol, low_since=at)
        .on_conflict_do_nothing()
        .returning(fill_rate_episodes.c.account_id)
    )
    return (await session.execute(statement)).first() is not None


async def close_fill_rate_episode(session: AsyncSession, account_id: str, symbol: str) -> None:
    """End the account + symbol's low fill-rate episode, if any."""
    e = fill_rate_episodes
    await session.execute(sa.delete(e).where(e.c.account_id == account_id, e.c.symbol == symbol))


async def prune_order_outcomes(session: AsyncSession, before: datetime) -> int:
    """Delete the outcomes of orders submitted before `before`; how many."""
    o = order_outcomes
    result = await session.execute(sa.delete(o).where(o.c.submitted_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


pnl_positions = sa.Table(
    "pnl_positions",
    _METADATA,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("quantity", Money, nullable=False),
    sa.Column("cost", Money, nullable=False),
    sa.Column("realized", Money, nullable=False),
    sa.Column("fees", Money, nullable=False),
    sa.Column("turnover", Money, nullable=False),
    sa.Column("fills", sa.Integer, nullable=False),
)
pnl_points = sa.Table(
    "pnl_points",
    _METADATA,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("at", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("pnl", Money, nullable=False),
)
pnl_jump_episodes = sa.Table(
    "pnl_jump_episodes",
    _METADATA,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
)
POSITION_FIELDS = ("quantity", "cost", "realized", "fees", "turnover", "fills")


async def pnl_position(session: AsyncSession, account_id: str, symbol: str) -> dict[str, Any] | None:
    """The account's stored position in `symbol` (locked for the caller's transaction), or None."""
    p = pnl_positions
    query = sa.select(*(p.c[f] for f in POSITION_FIELDS)).where(p.c.account_id == account_id, p.c.symbol == symbol)
    row = (await session.execute(query.with_for_update())).first()
    return None if row is None else dict(row._mapping)


async def save_pnl_position(session: AsyncSession, account_id: str, symbol: str, fields: dict[str, Any]) -> None:
    """Insert or replace the account's position in `symbol`."""
    statement = insert(pnl_positions).values(account_id=account_id, symbol=symbol, **fields)
    statement = statement.on_conflict_do_update(
        index_elements=[pnl_positions.c.account_id, pnl_positions.c.symbol], set_=fields
    )
    await session.execute(statement)


async def open_positions(session: AsyncSession) -> list[Any]:
    """(account_id, symbol) of every position with an open quantity."""
    p = pnl_positions
    query = sa.select(p.c.account_id, p.c.symbol).where(p.c.quantity != 0).order_by(p.c.account_id, p.c.symbol)
    return list((await session.execute(query)).all())


async def mark_at(session: AsyncSession, symbol: str, at: datetime) -> tuple[Decimal, str, datetime] | None:
    """The newest stored price of `symbol` (any venue) at or before `at`: a book's mid or a trade, whichever is
    newer (price, source, when); None when neither is stored."""
    b, t = md.book_snapshots, md.trades
    book = (
        await session.execute(
            sa.select(b.c.taken_at, b.c.bids, b.c.asks)
            .where(b.c.instrument == symbol, b.c.taken_at <= at)
            .order_by(b.c.taken_at.desc(), b.c.sequence.desc())
            .limit(1)
        )
    ).first()
    trade = (
        await session.execute(
            sa.select(t.c.traded_at, t.c.price)
            .where(t.c.instrument == symbol, t.c.traded_at <= at)
            .order_by(t.c.traded_at.desc())
            .limit(1)
        )
    ).first()
    if book is not None and book.bids and book.asks and (trade is None or book.taken_at >= trade.traded_at):
        return (Decimal(book.bids[0][0]) + Decimal(book.asks[0][0])) / 2, "book mid", book.taken_at
    if trade is not None:
        return Decimal(trade.price), "trade", trade.traded_at
    return None


async def add_pnl_point(session: AsyncSession, account_id: str, symbol: str, at: datetime, pnl: Decimal) -> None:
    """Note the account's PnL in `symbol` at `at` (the latest value at the same instant wins)."""
    statement = insert(pnl_points).values(account_id=account_id, symbol=symbol, at=at, pnl=pnl)
    statement = statement.on_conflict_do_update(
        index_elements=[pnl_points.c.account_id, pnl_points.c.symbol, pnl_points.c.at], set_={"pnl": pnl}
    )
    await session.execute(statement)


async def pnl_points_within(
    session: AsyncSession, account_id: str, symbol: str, start: datetime, end: datetime
) -> list[tuple[datetime, Decimal]]:
    """(at, pnl) of the account's PnL points in `symbol` within [start, end], by time."""
    p = pnl_points
    query = (
        sa.select(p.c.at, p.c.pnl)
        .where(p.c.account_id == account_id, p.c.symbol == symbol, p.c.at >= start, p.c.at <= end)
        .order_by(p.c.at)
    )
    return [(r[0], r[1]) for r in (await session.execute(query)).all()]


async def prune_pnl_points(session: AsyncSession, before: datetime) -> int:
    """Delete the PnL points older than `before`; how many."""
    result = await session.execute(sa.delete(pnl_points).where(pnl_points.c.at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def open_pnl_jump_episode(session: AsyncSession, account_id: str, symbol: str, at: datetime) -> bool:
    """Start a PnL-jump episode; False when one is already open."""
    e = pnl_jump_episodes
    statement = (
        insert(e).values(account_id=account_id, symbol=symbol, since=at).on_conflict_do_nothing().returning(e.c.since)
    )
    return (await session.execute(statement)).first() is not None


async def close_pnl_jump_episode(session: AsyncSession, account_id: str, symbol: str) -> None:
    """End the account + symbol's PnL-jump episode, if any."""
    e = pnl_jump_episodes
    await session.execute(sa.delete(e).where(e.c.account_id == account_id, e.c.symbol == symbol))
