"""The exit tables of schema `risk` as SQLAlchemy Core (created by migration 0015_risk_exits)."""

from __future__ import annotations

import sqlalchemy as sa

from shared.db.base import NAMING_CONVENTION, Money

TS = sa.DateTime(timezone=True)
metadata = sa.MetaData(schema="risk", naming_convention=NAMING_CONVENTION)

exit_policies = sa.Table(
    "exit_policies",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("stop_loss_pct", Money),
    sa.Column("take_profit_pct", Money),
    sa.Column("trailing_distance_pct", Money),
    sa.Column("trailing_activation_pct", Money),
    sa.Column("time_limit_s", sa.Integer),
    sa.Column("swap_band_pct", Money, nullable=False),
    sa.Column("require_explicit_exits", sa.Boolean, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("updated_by", sa.Text, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

exit_brackets = sa.Table(
    "exit_brackets",
    metadata,
    sa.Column("bracket_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("symbol", sa.Text, nullable=False),
    sa.Column("entry_order_id", sa.Text, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("stop_loss", Money),
    sa.Column("take_profit", Money),
    sa.Column("trailing_distance", Money),
    sa.Column("trailing_activation", Money),
    sa.Column("time_limit_s", sa.Integer),
    sa.Column("from_policy", sa.Boolean, nullable=False),
    sa.Column("swap_band_pct", Money, nullable=False),
    sa.Column("price_increment", Money, nullable=False),
    sa.Column("entry_quantity", Money, nullable=False),
    sa.Column("entry_cost", Money, nullable=False),
    sa.Column("exited_quantity", Money, nullable=False),
    sa.Column("trailing_high", Money),
    sa.Column("stop_moved", sa.Boolean, nullable=False),
    sa.Column("exit_leg", sa.Text),
    sa.Column("sequence", sa.Integer, nullable=False),
    sa.Column("rejections", sa.Integer, nullable=False),
    sa.Column("last_price", Money),
    sa.Column("working_client_order_id", sa.Text),
    sa.Column("working_leg", sa.Text),
    sa.Column("working_quantity", Money),
    sa.Column("working_limit_price", Money),
    sa.Column("working_state", sa.Text),
    sa.Column("working_filled", Money),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("opened_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

exit_orders = sa.Table(
    "exit_orders",
    metadata,
    sa.Column("client_order_id", sa.Text, primary_key=True),
    sa.Column("bracket_id", sa.Text, nullable=False),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("leg", sa.Text, nullable=False),
    sa.Column("quantity", Money, nullable=False),
    sa.Column("limit_price", Money),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("filled_quantity", Money, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS, nullable=False),
)

exit_feed_offsets = sa.Table(
    "exit_feed_offsets",
    metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger, nullable=False),
)
