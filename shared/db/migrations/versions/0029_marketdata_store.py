"""Schema `marketdata`: book snapshots, the quarantine, candles (1m, 1h, 1d) and the sink's inbox.

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


def downgrade() -> None:
    drop_event_tables("marketdata")
    for view in reversed(marketdata.CANDLE_VIEWS.values()):
        op.execute(sa.text(f"DROP MATERIALIZED VIEW IF EXISTS {marketdata.SCHEMA}.{view.name}"))
    marketdata.metadata.drop_all(op.get_bind(), tables=[marketdata.quarantine, marketdata.book_snapshots])
