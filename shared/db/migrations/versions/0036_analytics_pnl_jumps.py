"""PnL jumps in the analytics service: each account's average-cost position per symbol (from the OMS's fills), its
recent mark-to-market PnL points, and which account + symbol is in a PnL-jump episode.

Revision ID: 0036_analytics_pnl_jumps
Revises: 0034_analytics_trading_anomalies
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import Money

revision = "0036_analytics_pnl_jumps"
down_revision = "0034_analytics_trading_anomalies"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pnl_positions",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("cost", Money, nullable=False),
        sa.Column("realized", Money, nullable=False),
        sa.Column("fees", Money, nullable=False),
        sa.Column("turnover", Money, nullable=False),
        sa.Column("fills", sa.Integer, nullable=False),
        schema="analytics",
    )
    op.create_table(
        "pnl_points",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("at", sa.DateTime(timezone=True), primary_key=True),
        sa.Column("pnl", Money, nullable=False),
        schema="analytics",
    )
    op.create_index("ix_pnl_points_at", "pnl_points", ["at"], schema="analytics")
    op.create_table(
        "pnl_jump_episodes",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("since", sa.DateTime(timezone=True), nullable=False),
        schema="analytics",
    )


def downgrade() -> None:
    op.drop_table("pnl_jump_episodes", schema="analytics")
    op.drop_index("ix_pnl_points_at", "pnl_points", schema="analytics")
    op.drop_table("pnl_points", schema="analytics")
    op.drop_table("pnl_positions", schema="analytics")
