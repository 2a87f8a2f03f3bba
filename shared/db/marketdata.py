"""Schema `marketdata`: the one definition of its tables and candle views, shared by the writers (data/ingest)
and the readers (services/analytics).

Trades are unique per venue + instrument + trade id + time (a hypertable's unique keys must hold its time
column; `aether data check` finds a trade id stored at two times). Book snapshots keep the top N levels per side
as JSON arrays of `[price, qty]` decimal strings. The quarantine keeps what could not be stored, with its source,
position and reason, never silently dropped. Candles (1m, 1h, 1d) are continuous aggregates over trades where
TimescaleDB exists and materialized views (unique index, refreshed concurrently) where it does not: the same
names and columns either way, so every query reads them alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import NAMING_CONVENTION, Money

SCHEMA = "marketdata"
metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)

trades = sa.Table(
    "trades",
    metadata,
    sa.Column("venue", sa.Text, nullable=False),
    sa.Column("instrument", sa.Text, nullable=False),
    sa.Column("trade_id", sa.Text, nullable=False),
    sa.Column("traded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("price", Money, nullable=False),
    sa.Column("quantity", Money, nullable=False),
    sa.Column("side", sa.Text, nullable=False),
    sa.PrimaryKeyConstraint("venue", "instrument", "trade_id", "traded_at", name="pk_trades"),
)

# Why a snapshot was stored: the feed sent a full book (subscription or checksum resync), or the interval passed.
SNAPSHOT_REASONS = ("snapshot", "interval")

book_snapshots = sa.Table(
    "book_snapshots",
    metadata,
    sa.Column("venue", sa.Text, nullable=False),
    sa.Column("instrument", sa.Text, nullable=False),
    sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("sequence", sa.BigInteger, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("depth", sa.Integer, nullable=False),
    sa.Column("bids", JSONB, nullable=False),
    sa.Column("asks", JSONB, nullable=False),
    sa.Column("checksum", sa.BigInteger, nullable=True),
    sa.CheckConstraint("reason IN ('snapshot', 'interval')", name="reason"),
    sa.CheckConstraint("depth > 0", name="depth"),
    sa.PrimaryKeyConstraint("venue", "instrument", "taken_at", "sequence", name="pk_book_snapshots"),
    sa.Index("ix_book_snapshots_instrument_time", "instrument", sa.text("taken_at DESC")),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
    # Where it came from: `kafka:<topic>` for the sink, `check:<table>` for `aether data check`, a backfill's name.
    sa.Column("source", sa.Text, nullable=False),
    # Where in the source: `partition 0 offset 42`, a row's key, a line number.
    sa.Column("position", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("raw", sa.LargeBinary, nullable=False),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    # A redelivered bad record, or a second check of the same row, is quarantined once.
    sa.UniqueConstraint("source", "position", "reason", name="uq_quarantine_source_position_reason"),
)


@dataclass(frozen=True, slots=True)
class CandleView:
    """One candle rollup: its view name and bucket width."""

    interval: str
    name: str
    width: str
    # Refreshing a continuous aggregate recomputes only invalidated buckets; this bounds the policy's look-back.
    policy_start: str


CANDLE_VIEWS: dict[str, CandleView] = {
    view.interval: view
    for view in (
        CandleView("1m", "candles_1m", "1 minute", "2 hours"),
        CandleView("1h", "candles_1h", "1 hour", "3 days"),
        CandleView("1d", "candles_1d", "1 day", "30 days"),
    )
}


def candle_view(interval: str) -> sa.TableClause:
    """The columns of a candle view, for queries (identical on both paths)."""
    return sa.table(
        CANDLE_VIEWS[interval].name,
        sa.column("venue", sa.Text),
        sa.column("instrument", sa.Text),
        sa.column("bucket", sa.DateTime(timezone=True)),
        sa.column("open", Money),
        sa.column("high", Money),
        sa.column("low", Money),
        sa.column("close", Money),
        sa.column("volume", Money),
        sa.column("notional", Money),
        sa.column("trade_count", sa.BigInteger),
        schema=SCHEMA,
    )


def _candle_select(view: CandleView, *, timescale: bool) -> str:
    if timescale:
        bucket = f"time_bucket(INTERVAL '{view.width}', traded_at)"
        first_last = "first(price, traded_at) AS open, last(price, traded_at) AS close"
    else:
        bucket = f"date_bin(INTERVAL '{view.width}', traded_at, TIMESTAMPTZ '2000-01-01 00:00:00+00')"
        first_last = (
            "(array_agg(price ORDER BY traded_at, trade_id))[1] AS open, "
            "(array_agg(price ORDER BY traded_at DESC, trade_id DESC))[1] AS close"
        )
    return (
        f"SELECT venue, instrument, {bucket} AS bucket, {first_last}, "  # noqa: S608 - constants only
        "max(price) AS high, min(price) AS low, sum(quantity) AS volume, "
        "CAST(sum(price * quantity) AS NUMERIC(38, 18)) AS notional, count(*) AS trade_count "
        f"FROM {SCHEMA}.trades GROUP BY venue, instrument, {bucket}"
    )


def create_candle_view_sql(view: CandleView, *, timescale: bool) -> list[str]:
    """The statements that create one candle view: a continuous aggregate with its refresh policy (TimescaleDB), or a
    materialized view with the unique index REFRESH ... CONCURRENTLY needs (plain PostgreSQL)."""
    qualified = f"{SCHEMA}.{view.name}"
    if timescale:
        return [
            f"CREATE MATERIALIZED VIEW {qualified} WITH (timescaledb.continuous) AS "
            f"{_candle_select(view, timescale=True)} WITH NO DATA",
            # Unique by construction (grouped by these columns); a continuous aggregate takes plain indexes.
            f"CREATE INDEX ix_{view.name} ON {qualified} (venue, instrument, bucket)",
            f"SELECT add_continuous_aggregate_policy('{qualified}', start_offset => INTERVAL '{view.policy_start}', "
            f"end_offset => NULL, schedule_interval => INTERVAL '{view.width}')",
        ]
    return [
        f"CREATE MATERIALIZED VIEW {qualified} AS {_candle_select(view, timescale=False)} WITH DATA",
        f"CREATE UNIQUE INDEX ux_{view.name} ON {qualified} (venue, instrument, bucket)",
    ]


def refresh_candle_view_sql(view: CandleView, *, timescale: bool) -> str:
    """Refresh one view: incremental (invalidated buckets only) on TimescaleDB, a concurrent full refresh otherwise.

    The TimescaleDB call cannot run inside a transaction block: run it on an autocommit connection.
    """
    qualified = f"{SCHEMA}.{view.name}"
    if timescale:
        return f"CALL refresh_continuous_aggregate('{qualified}', NULL, NULL)"
    return f"REFRESH MATERIALIZED VIEW CONCURRENTLY {qualified}"
