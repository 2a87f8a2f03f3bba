"""Schema `oms`: trading accounts, orders and their history, fills, balances and their journal, positions.

Revision ID: 0012_oms_trading
Revises: 0011_backtest
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money

revision = "0012_oms_trading"
down_revision = "0011_backtest"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "trading_accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("approval_threshold", Money, nullable=True),
        sa.Column("volume_30d", Money, nullable=False, server_default="0"),
        sa.Column("fill_cursor", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        schema="oms",
    )
    op.create_table(
        "orders",
        sa.Column("order_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, sa.ForeignKey("oms.trading_accounts.account_id"), nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("request_hash", sa.Text, nullable=False),
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("limit_price", Money, nullable=True),
        sa.Column("trigger_price", Money, nullable=True),
        sa.Column("time_in_force", sa.Text, nullable=False),
        sa.Column("post_only", sa.Boolean, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("filled_quantity", Money, nullable=False, server_default="0"),
        sa.Column("average_fill_price", Money, nullable=True),
        sa.Column("fees_paid", Money, nullable=False, server_default="0"),
        sa.Column("venue_order_id", sa.Text, nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("origin", sa.Text, nullable=False, server_default="rest"),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("account_id", "client_order_id", name="uq_orders_account_client_order_id"),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("filled_quantity >= 0 AND filled_quantity <= quantity", name="filled_within_quantity"),
        schema="oms",
    )
    op.create_index("ix_orders_account_created", "orders", ["account_id", sa.text("created_at DESC")], schema="oms")
    op.create_index(
        "ix_orders_open",
        "orders",
        ["status"],
        schema="oms",
        postgresql_where=sa.text(
            "status IN ('submitted', 'accepted', 'partially_filled', 'pending_cancel', 'pending_approval')"
        ),
    )
    op.create_table(
        "order_events",
        sa.Column("order_id", sa.Text, sa.ForeignKey("oms.orders.order_id"), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        schema="oms",
    )
    op.create_table(
        "fills",
        sa.Column("fill_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, sa.ForeignKey("oms.orders.order_id"), nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("fee", Money, nullable=False),
        sa.Column("fee_asset", sa.Text, nullable=False),
        sa.Column("liquidity", sa.Text, nullable=False),
        sa.Column("filled_at", TS, nullable=False),
        sa.UniqueConstraint("venue", "trade_id", name="uq_fills_venue_trade_id"),
        schema="oms",
    )
    op.create_index("ix_fills_account_time", "fills", ["account_id", sa.text("filled_at DESC")], schema="oms")
    op.create_index("ix_fills_order", "fills", ["order_id"], schema="oms")
    op.create_table(
        "balances",
        sa.Column("account_id", sa.Text, sa.ForeignKey("oms.trading_accounts.account_id"), primary_key=True),
        sa.Column("asset", sa.Text, primary_key=True),
        sa.Column("total", Money, nullable=False),
        sa.Column("reserved", Money, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("total >= 0 AND reserved >= 0 AND reserved <= total", name="balance_bounds"),
        schema="oms",
    )
    op.create_table(
        "reservations",
        sa.Column("order_id", sa.Text, sa.ForeignKey("oms.orders.order_id"), primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("remaining", Money, nullable=False),
        sa.CheckConstraint("remaining >= 0", name="remaining_not_negative"),
        schema="oms",
    )
    op.create_table(
        "balance_journal",
        sa.Column("entry_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("delta_total", Money, nullable=False),
        sa.Column("delta_reserved", Money, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("reference", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        schema="oms",
    )
    op.create_index("ix_balance_journal_account", "balance_journal", ["account_id", "asset"], schema="oms")
    op.create_table(
        "positions",
        sa.Column("account_id", sa.Text, sa.ForeignKey("oms.trading_accounts.account_id"), primary_key=True),
        sa.Column("symbol", sa.Text, primary_key=True),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("cost_basis", Money, nullable=False),
        sa.Column("realized_pnl", Money, nullable=False),
        sa.Column("fees_paid", Money, nullable=False),
        sa.Column("updated_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("quantity >= 0", name="spot_no_short"),
        schema="oms",
    )


def downgrade() -> None:
    for table in (
        "positions",
        "balance_journal",
        "reservations",
        "balances",
        "fills",
        "order_events",
        "orders",
        "trading_accounts",
    ):
        op.drop_table(table, schema="oms")
