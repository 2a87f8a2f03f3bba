"""Schema risk: exit brackets and their legs (issue 4, exit brackets).

Revision ID: 0015_risk_exits
Revises: 0014_risk_limits
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import Money

revision = "0015_risk_exits"
down_revision = "0014_risk_limits"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
OPEN_STATUSES = "status IN ('armed', 'exiting')"


def upgrade() -> None:
    op.create_table(
        "exit_policies",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("stop_loss_pct", Money, nullable=True),
        sa.Column("take_profit_pct", Money, nullable=True),
        sa.Column("trailing_distance_pct", Money, nullable=True),
        sa.Column("trailing_activation_pct", Money, nullable=True),
        sa.Column("time_limit_s", sa.Integer, nullable=True),
        sa.Column("swap_band_pct", Money, nullable=False),
        sa.Column("require_explicit_exits", sa.Boolean, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_by", sa.Text, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        schema="risk",
    )
    op.create_table(
        "exit_brackets",
        sa.Column("bracket_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("entry_order_id", sa.Text, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("stop_loss", Money, nullable=True),
        sa.Column("take_profit", Money, nullable=True),
        sa.Column("trailing_distance", Money, nullable=True),
        sa.Column("trailing_activation", Money, nullable=True),
        sa.Column("time_limit_s", sa.Integer, nullable=True),
        sa.Column("from_policy", sa.Boolean, nullable=False),
        sa.Column("swap_band_pct", Money, nullable=False),
        sa.Column("price_increment", Money, nullable=False),
        sa.Column("entry_quantity", Money, nullable=False),
        sa.Column("entry_cost", Money, nullable=False),
        sa.Column("exited_quantity", Money, nullable=False),
        sa.Column("trailing_high", Money, nullable=True),
        sa.Column("stop_moved", sa.Boolean, nullable=False),
        sa.Column("exit_leg", sa.Text, nullable=True),
        sa.Column("sequence", sa.Integer, nullable=False),
        sa.Column("rejections", sa.Integer, nullable=False),
        sa.Column("last_price", Money, nullable=True),
        # The one exit order at the OMS (spot: one resting sell per balance), null when none.
        sa.Column("working_client_order_id", sa.Text, nullable=True),
        sa.Column("working_leg", sa.Text, nullable=True),
        sa.Column("working_quantity", Money, nullable=True),
        sa.Column("working_limit_price", Money, nullable=True),
        sa.Column("working_state", sa.Text, nullable=True),
        sa.Column("working_filled", Money, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("opened_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("account_id", "entry_order_id", name="uq_exit_brackets_account_entry"),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        schema="risk",
    )
    op.create_index(
        "ix_exit_brackets_open_symbol",
        "exit_brackets",
        ["symbol"],
        schema="risk",
        postgresql_where=sa.text(OPEN_STATUSES),
    )
    op.create_index("ix_exit_brackets_account", "exit_brackets", ["account_id", "opened_at"], schema="risk")
    op.create_table(
        "exit_orders",
        sa.Column("client_order_id", sa.Text, primary_key=True),
        sa.Column("bracket_id", sa.Text, sa.ForeignKey("risk.exit_brackets.bracket_id"), nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("leg", sa.Text, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("limit_price", Money, nullable=True),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("filled_quantity", Money, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        schema="risk",
    )
    op.create_index("ix_exit_orders_bracket", "exit_orders", ["bracket_id"], schema="risk")
    op.create_table(
        "exit_feed_offsets",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        schema="risk",
    )


def downgrade() -> None:
    op.drop_table("exit_feed_offsets", schema="risk")
    op.drop_table("exit_orders", schema="risk")
    op.drop_table("exit_brackets", schema="risk")
    op.drop_table("exit_policies", schema="risk")
