"""Trading anomalies in the analytics service: what it keeps from the OMS's order events (the outcome of each
submitted order, and which account + symbol is in a low fill-rate episode), and an anomaly key that names the
account, so two accounts' anomalies at the same instant are both kept.

Revision ID: 0034_analytics_trading_anomalies
Revises: 0032_reports_read_model
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0034_analytics_trading_anomalies"
down_revision = "0032_reports_read_model"
branch_labels = None
depends_on = None

OLD_KEY = "uq_anomalies_kind_venue_symbol_observed_at"
KEY = "uq_anomalies_kind_venue_symbol_account_observed_at"


def upgrade() -> None:
    op.create_table(
        "order_outcomes",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("filled", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("closed", sa.Boolean, nullable=False, server_default=sa.false()),
        schema="analytics",
    )
    op.create_index(
        "ix_order_outcomes_account_symbol_submitted_at",
        "order_outcomes",
        ["account_id", "symbol", "submitted_at"],
        schema="analytics",
    )
    op.create_table(
        "fill_rate_episodes",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("low_since", sa.DateTime(timezone=True), nullable=False),
        schema="analytics",
    )
    op.drop_constraint(OLD_KEY, "anomalies", schema="analytics", type_="unique")
    op.execute(
        sa.text(
            f"CREATE UNIQUE INDEX {KEY} ON analytics.anomalies"
            " (kind, venue, symbol, coalesce(account_id, ''), observed_at)"
        )
    )


def downgrade() -> None:
    op.drop_index(KEY, "anomalies", schema="analytics")
    op.execute(
        sa.text("DELETE FROM analytics.anomalies WHERE account_id IS NOT NULL")
    )  # the old key cannot hold two accounts' rows
    op.create_unique_constraint(OLD_KEY, "anomalies", ["kind", "venue", "symbol", "observed_at"], schema="analytics")
    op.drop_table("fill_rate_episodes", schema="analytics")
    op.drop_table("order_outcomes", schema="analytics")
