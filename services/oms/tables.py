"""The tables of schema `oms` as the repositories query them (created by migration `0012_oms_trading` and later):
accounts, orders with their events, and fills (`repository.py`); balances, reservations, the balance journal,
positions, deposits, quarantined fills and the daily realized PnL (`ledger_repository.py`)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money

SCHEMA = "oms"
metadata = sa.MetaData(schema=SCHEMA)
TS = sa.DateTime(timezone=True)

trading_accounts = sa.Table(
    "trading_accounts",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("venue", sa.Text),
    sa.Column("approval_threshold", Money),
    sa.Column("fill_cursor", sa.BigInteger),
    sa.Column("created_at", TS),
)
orders = sa.Table(
    "orders",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text),
    sa.Column("client_order_id", sa.Text),
    sa.Column("request_hash", sa.Text),
    sa.Column("venue", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("side", sa.Text),
    sa.Column("type", sa.Text),
    sa.Column("quantity", Money),
    sa.Column("limit_price", Money),
    sa.Column("trigger_price", Money),
    sa.Column("time_in_force", sa.Text),
    sa.Column("post_only", sa.Boolean),
    sa.Column("status", sa.Text),
    sa.Column("filled_quantity", Money),
    sa.Column("average_fill_price", Money),
    sa.Column("fees_paid", Money),
    sa.Column("venue_order_id", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("version", sa.Integer),
    sa.Column("origin", sa.Text),
    sa.Column("created_at", TS),
    sa.Column("updated_at", TS),
    sa.Column("exits", JSONB(none_as_null=True)),
    sa.Column("approval_payload", JSONB(none_as_null=True)),
)
order_events = sa.Table(
    "order_events",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("event_type", sa.Text),
    sa.Column("payload", JSONB),
    sa.Column("occurred_at", TS),
)
fills = sa.Table(
    "fills",
    metadata,
    sa.Column("fill_id", sa.BigInteger, primary_key=True),
    sa.Column("venue", sa.Text),
    sa.Column("trade_id", sa.Text),
    sa.Column("order_id", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("symbol", sa.Text),
    sa.Column("side", sa.Text),
    sa.Column("quantity", Money),
    sa.Column("price", Money),
    sa.Column("fee", Money),
    sa.Column("fee_asset", sa.Text),
    sa.Column("liquidity", sa.Text),
    sa.Column("filled_at", TS),
)
balances = sa.Table(
    "balances",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("asset", sa.Text, primary_key=True),
    sa.Column("total", Money),
    sa.Column("reserved", Money),
    sa.Column("updated_at", TS),
)
reservations = sa.Table(
    "reservations",
    metadata,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("account_id", sa.Text),
    sa.Column("asset", sa.Text),
    sa.Column("remaining", Money),
)
balance_journal = sa.Table(
    "balance_journal",
    metadata,
    sa.Column("entry_id", sa.BigInteger, primary_key=True),
    sa.Column("account_id", sa.Text),
    sa.Column("asset", sa.Text),
    sa.Column("delta_total", Money),
    sa.Column("delta_reserved", Money),
    sa.Column("reason", sa.Text),
    sa.Column("reference", sa.Text),
    sa.Column("created_at", TS),
)
positions = sa.Table(
    "positions",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("symbol", sa.Text, primary_key=True),
    sa.Column("quantity", Money),
    sa.Column("cost_basis", Money),
    sa.Column("realized_pnl", Money),
    sa.Column("fees_paid", Money),
    sa.Column("updated_at", TS),
)

# What the OMS enforces, copied from the owners' compacted controls topics (migration 0025_oms_controls).
controls = sa.Table(
    "controls",
    metadata,
    sa.Column("control_key", sa.Text, primary_key=True),
    sa.Column("kind", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("version", sa.BigInteger),
    sa.Column("value", JSONB(none_as_null=True)),
    sa.Column("violation", sa.Text),
    sa.Column("event_id", sa.Text),
    sa.Column("received_at", TS),
)
control_snapshots = sa.Table(
    "control_snapshots",
    metadata,
    sa.Column("owner", sa.Text, primary_key=True),
    sa.Column("records", sa.Integer),
    sa.Column("published_at", TS),
    sa.Column("received_at", TS),
)
control_offsets = sa.Table(
    "control_offsets",
    metadata,
    sa.Column("topic", sa.Text, primary_key=True),
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("next_offset", sa.BigInteger),
)
deposits = sa.Table(
    "deposits",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("reference", sa.Text, primary_key=True),
    sa.Column("asset", sa.Text),
    sa.Column("amount", Money),
    sa.Column("status", sa.Text),
    sa.Column("requested_by", sa.Text),
    sa.Column("requested_at", TS),
    sa.Column("applied_at", TS),
    sa.Column("balance_total", Money),
    sa.Column("balance_reserved", Money),
)
withdrawals = sa.Table(
    "withdrawals",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("reference", sa.Text, primary_key=True),
    sa.Column("asset", sa.Text),
    sa.Column("amount", Money),
    sa.Column("status", sa.Text),
    sa.Column("requested_by", sa.Text),
    sa.Column("requested_at", TS),
    sa.Column("applied_at", TS),
    sa.Column("balance_total", Money),
    sa.Column("balance_reserved", Money),
)
transfers = sa.Table(
    "transfers",
    metadata,
    sa.Column("reference", sa.Text, primary_key=True),
    sa.Column("from_account_id", sa.Text),
    sa.Column("to_account_id", sa.Text),
    sa.Column("asset", sa.Text),
    sa.Column("amount", Money),
    sa.Column("status", sa.Text),
    sa.Column("requested_by", sa.Text),
    sa.Column("requested_at", TS),
    sa.Column("applied_at", TS),
    sa.Column("approval_payload", JSONB),
)
quarantined_fills = sa.Table(
    "quarantined_fills",
    metadata,
    sa.Column("quarantine_id", sa.BigInteger, primary_key=True),
    sa.Column("venue", sa.Text),
    sa.Column("trade_id", sa.Text),
    sa.Column("account_id", sa.Text),
    sa.Column("client_order_id", sa.Text),
    sa.Column("order_id", sa.Text),
    sa.Column("reason_code", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("fill", JSONB),
    sa.Column("quarantined_at", TS),
)
daily_realized_pnl = sa.Table(
    "daily_realized_pnl",
    metadata,
    sa.Column("account_id", sa.Text, primary_key=True),
    sa.Column("day", sa.Date, primary_key=True),
    sa.Column("realized_pnl", Money),
)
