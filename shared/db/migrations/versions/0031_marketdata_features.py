"""Schema `marketdata`: `features`, the microstructure features of each closed bar (docs/features.md), written
by the streaming feature engine and by a batch recompute of a range; a hypertable on `bar_start` where
TimescaleDB exists, an ordinary table otherwise (the same queries either way).

Values are DOUBLE PRECISION: statistics, not money, compared bit for bit between the two engines.

Revision ID: 0031_marketdata_features
Revises: 0030_marketdata_backfill
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.timescale import make_time_series

revision = "0031_marketdata_features"
down_revision = "0030_marketdata_backfill"
branch_labels = None
depends_on = None

FEATURES = (
    "mid",
    "spread",
    "spread_bps",
    "depth_imbalance",
    "ofi",
    "signed_volume",
    "volume",
    "trade_intensity",
    "vwap",
    "vwap_deviation",
    "rv_5",
    "rv_15",
    "rv_60",
    "kyle_lambda",
    "amihud",
)


def upgrade() -> None:
    op.create_table(
        "features",
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("instrument", sa.Text, nullable=False),
        sa.Column("bar_seconds", sa.Integer, nullable=False),
        sa.Column("bar_start", sa.DateTime(timezone=True), nullable=False),
        *(sa.Column(name, sa.Double, nullable=True) for name in FEATURES),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("bar_seconds > 0", name="bar_seconds_positive"),
        # A hypertable's unique keys must include its time column.
        sa.PrimaryKeyConstraint("venue", "instrument", "bar_seconds", "bar_start", name="pk_features"),
        schema="marketdata",
    )
    op.create_index(
        "ix_features_instrument_time", "features", ["instrument", sa.text("bar_start DESC")], schema="marketdata"
    )
    make_time_series(op.get_bind(), "marketdata.features", "bar_start")


def downgrade() -> None:
    op.drop_table("features", schema="marketdata")
