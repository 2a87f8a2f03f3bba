"""Schema hedge: account state (NAV, peak), NAV history, volatility, overrides with history, kill-switch
recommendations, hedge orders and versioned per-account policies (issue 4, hedge).

Revision ID: 0016_hedge_state
Revises: 0015_risk_exits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money

revision = "0016_hedge_state"
down_revision = "0015_risk_exits"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMA = "hedge"


def upgrade() -> None:
    """Create the hedge service's state tables."""
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("holdings", JSONB, nullable=True),
        sa.Column("holdings_at", TS, nullable=True),
        sa.Column("nav", Money, nullable=True),
        sa.Column("peak_nav", Money, nullable=True),
        sa.Column("peak_at", TS, nullable=True),
        sa.Column("drawdown", Money, nullable=False, server_default="0"),
        sa.Column("volatility", Money, nullable=False, server_default="0"),
        sa.Column("current_fraction", Money, nullable=True),
        sa.Column("computed_target", Money, nullable=True),
        sa.Column("effective_target", Money, nullable=True),
        sa.Column("target_version", sa.Integer, nullable=False, server_default="0"),
        sa.Column("evaluated_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        schema=SCHEMA,
    )
    op.create_table(
        "nav_history",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("account_id", sa.Text, sa.ForeignKey("hedge.accounts.account_id"), nullable=False),
        sa.Column("nav", Money, nullable=False),
        sa.Column("peak_nav", Money, nullable=False),
        sa.Column("observed_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_index("ix_nav_history_account_time", "nav_history", ["account_id", "observed_at"], schema=SCHEMA)
    op.create_table(
        "volatility",
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("last_price", Money, nullable=False),
        sa.Column("variance", Money, nullable=False),
        sa.Column("samples", sa.Integer, nullable=False),
        sa.Column("sampled_at", TS, nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("priced_at", TS, nullable=False),
        schema=SCHEMA,
    )
    _overrides()
    _recommendations()
    _orders()
    op.create_table(
        "policies",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("policy", JSONB, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("set_by", sa.Text, nullable=False),
        sa.Column("set_at", TS, nullable=False),
        schema=SCHEMA,
    )


def _overrides() -> None:
    op.create_table(
        "overrides",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("target_fraction", Money, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("expires_at", TS, nullable=False),
        sa.Column("set_by", sa.Text, nullable=False),
        sa.Column("set_at", TS, nullable=False),
        sa.CheckConstraint("target_fraction >= 0 AND target_fraction <= 1", name="fraction_bounds"),
        schema=SCHEMA,
    )
    op.create_table(
        "override_history",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target_fraction", Money, nullable=True),
        sa.Column("previous_fraction", Money, nullable=True),
        sa.Column("previous_expires_at", TS, nullable=True),
        sa.Column("expires_at", TS, nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.CheckConstraint("action IN ('set', 'clear')", name="action_known"),
        schema=SCHEMA,
    )
    op.create_index("ix_override_history_account", "override_history", ["account_id", "id"], schema=SCHEMA)


def _recommendations() -> None:
    op.create_table(
        "recommendations",
        sa.Column("recommendation_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("level", sa.Text, nullable=False),
        sa.Column("drawdown", Money, nullable=False),
        sa.Column("threshold", Money, nullable=False),
        sa.Column("raised_at", TS, nullable=False),
        sa.Column("rearmed_at", TS, nullable=True),
        sa.Column("rearmed_by", sa.Text, nullable=True),
        sa.Column("rearm_reason", sa.Text, nullable=True),
        sa.CheckConstraint("level IN ('pause', 'reduce_only', 'flatten')", name="level_known"),
        schema=SCHEMA,
    )
    # A level is raised once until re-armed: at most one un-re-armed row per account and level.
    op.create_index(
        "uq_recommendations_active",
        "recommendations",
        ["account_id", "level"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("rearmed_at IS NULL"),
    )


def _orders() -> None:
    op.create_table(
        "orders",
        sa.Column("client_order_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("target_version", sa.Integer, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("from_fraction", Money, nullable=False),
        sa.Column("to_fraction", Money, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("filled_quantity", Money, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("settled_at", TS, nullable=True),
        sa.UniqueConstraint("account_id", "target_version", name="uq_orders_account_target_version"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_orders_open", "orders", ["account_id"], schema=SCHEMA, postgresql_where=sa.text("settled_at IS NULL")
    )


def downgrade() -> None:
    """Drop the hedge service's state tables (the outbox and inbox of 0006 stay)."""
    for table in (
        "policies",
        "orders",
        "recommendations",
        "override_history",
        "overrides",
        "volatility",
        "nav_history",
    ):
        op.drop_table(table, schema=SCHEMA)
    op.drop_table("accounts", schema=SCHEMA)
