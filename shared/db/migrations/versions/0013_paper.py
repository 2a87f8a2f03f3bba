"""Schema `paper`: the simulated exchange's own books (accounts, orders, fills, balances, deposits).

Revision ID: 0013_paper
Revises: 0012_oms_trading
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import Money

revision = "0013_paper"
down_revision = "0012_oms_trading"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMA = "paper"


def upgrade() -> None:
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("created_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "orders",
        sa.Column("venue_order_id", sa.Text, primary_key=True),
        sa.Column("account_id", sa.Text, sa.ForeignKey("paper.accounts.account_id"), nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=False),
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
        sa.Column("fill_count", sa.Integer, nullable=False, server_default="0"),
        # A stop-loss-limit whose trigger fired rests as a limit order (restored as such after a restart).
        sa.Column("triggered", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("reason", sa.Text, nullable=True),
        # What the order still holds of the account's balance (quote for a buy, base for a sell).
        sa.Column("reserved_asset", sa.Text, nullable=False),
        sa.Column("reserved_remaining", Money, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.UniqueConstraint("account_id", "client_order_id", name="uq_orders_account_id_client_order_id"),
        sa.CheckConstraint("quantity > 0", name="quantity_positive"),
        sa.CheckConstraint("filled_quantity >= 0 AND filled_quantity <= quantity", name="filled_within_quantity"),
        sa.CheckConstraint("reserved_remaining >= 0", name="reserved_not_negative"),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="side"),
        sa.CheckConstraint("status IN ('open', 'filled', 'canceled', 'expired', 'rejected')", name="status"),
        sa.CheckConstraint("status = 'open' OR reserved_remaining = 0", name="closed_holds_nothing"),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_orders_open",
        "orders",
        ["account_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("status = 'open'"),
    )
    op.create_table(
        "fills",
        sa.Column("sequence", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("venue_order_id", sa.Text, sa.ForeignKey("paper.orders.venue_order_id"), nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("notional", Money, nullable=False),
        sa.Column("fee", Money, nullable=False),
        sa.Column("fee_asset", sa.Text, nullable=False),
        sa.Column("liquidity", sa.Text, nullable=False),
        sa.Column("filled_at", TS, nullable=False),
        sa.UniqueConstraint("trade_id", name="uq_fills_trade_id"),
        sa.CheckConstraint("quantity > 0 AND price > 0 AND fee >= 0", name="positive"),
        sa.CheckConstraint("liquidity IN ('maker', 'taker')", name="liquidity"),
        schema=SCHEMA,
    )
    op.create_index("ix_fills_account_sequence", "fills", ["account_id", "sequence"], schema=SCHEMA)
    op.create_index(
        "ix_fills_account_time", "fills", ["account_id", "filled_at"], schema=SCHEMA, postgresql_include=["notional"]
    )
    op.create_table(
        "balances",
        sa.Column("account_id", sa.Text, sa.ForeignKey("paper.accounts.account_id"), primary_key=True),
        sa.Column("asset", sa.Text, primary_key=True),
        sa.Column("total", Money, nullable=False),
        sa.Column("reserved", Money, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.CheckConstraint("total >= 0 AND reserved >= 0 AND reserved <= total", name="balance_bounds"),
        schema=SCHEMA,
    )
    op.create_table(
        "deposits",
        sa.Column("deposit_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("account_id", sa.Text, sa.ForeignKey("paper.accounts.account_id"), nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in ("deposits", "balances", "fills", "orders", "accounts"):
        op.drop_table(table, schema=SCHEMA)
    op.execute(f'DROP SCHEMA IF EXISTS "{SCHEMA}"')
