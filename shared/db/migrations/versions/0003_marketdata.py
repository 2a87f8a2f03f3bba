"""Schema `marketdata`: public trades, a time series (hypertable where TimescaleDB exists).

Revision ID: 0003_marketdata
Revises: 0002_audit
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import Money
from shared.db.timescale import make_time_series

revision = "0003_marketdata"
down_revision = "0002_audit"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "trades",
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("instrument", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("traded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="side"),
        sa.CheckConstraint("price > 0 AND quantity > 0", name="positive"),
        # A hypertable's unique keys must include its time column.
        sa.PrimaryKeyConstraint("venue", "instrument", "trade_id", "traded_at", name="pk_trades"),
        schema="marketdata",
    )
    op.create_index(
        "ix_trades_instrument_time", "trades", ["instrument", sa.text("traded_at DESC")], schema="marketdata"
    )
    make_time_series(op.get_bind(), "marketdata.trades", "traded_at")


def downgrade() -> None:
    op.drop_table("trades", schema="marketdata")
