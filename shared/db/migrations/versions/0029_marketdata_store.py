"""Schema `marketdata`: book snapshots, the quarantine, candles (1m, 1h, 1d) and the sink's inbox; and the
analytics service's anomaly log (`analytics.anomalies`).

Book snapshots become a hypertable and the candles continuous aggregates where TimescaleDB exists; otherwise
an ordinary table and materialized views that `aether data refresh-aggregates` refreshes. The same names and
columns either way (shared/db/marketdata.py).

Revision ID: 0029_marketdata_store
Revises: 0028_paper_events
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db import marketdata
from shared.db.base import Money
from shared.db.migration_ops import create_event_tables, drop_event_tables
from shared.db.timescale import make_time_series, timescale_enabled

revision = "0029_marketdata_store"
down_revision = "0028_paper_events"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    marketdata.metadata.create_all(bind, tables=[marketdata.book_snapshots, marketdata.quarantine])
    make_time_series(bind, "marketdata.book_snapshots", "taken_at")
    # 0003 made trades a hypertable when the extension was available; the candles follow what is enabled now.
    timescale = timescale_enabled(bind)
    for view in marketdata.CANDLE_VIEWS.values():
        for statement in marketdata.create_candle_view_sql(view, timescale=timescale):
            op.execute(sa.text(statement))
    create_event_tables("marketdata")
    op.create_table(
        "anomalies",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("anomaly_id", sa.Text, nullable=False, unique=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=True),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("detected_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("magnitude", Money, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        # One row per anomaly however often the scan sees it (a stale episode is keyed by its last trade).
        sa.UniqueConstraint(
            "kind", "venue", "symbol", "observed_at", name="uq_anomalies_kind_venue_symbol_observed_at"
        ),
        schema="analytics",
    )
    op.create_index("ix_anomalies_detected_at", "anomalies", ["detected_at", "id"], schema="analytics")


def downgrade() -> None:
    op.drop_table("anomalies", schema="analytics")
    drop_event_tables("marketdata")
    for view in reversed(marketdata.CANDLE_VIEWS.values()):
        op.execute(sa.text(f"DROP MATERIALIZED VIEW IF EXISTS {marketdata.SCHEMA}.{view.name}"))
    marketdata.metadata.drop_all(op.get_bind(), tables=[marketdata.quarantine, marketdata.book_snapshots])
