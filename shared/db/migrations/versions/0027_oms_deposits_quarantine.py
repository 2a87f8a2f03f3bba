"""Deposits keyed by reference, quarantined venue fills, and the daily realized PnL the daily-loss limit reads (issue 11).

- `oms.deposits`: the OMS's record of a paper deposit, keyed by (account, reference). It is written `pending`
  before the venue is credited and turns `applied` in the transaction that credits the ledger, with the balance
  it left: a repeat of the reference answers that, and reconciliation completes a pending one.
- `paper.deposits.reference`: the venue credits a reference once (rows from before this migration get
  `legacy-<deposit_id>`).
- `oms.quarantined_fills`: venue fills the order state machine or the ledger refused, raw, with the reason.
- `oms.daily_realized_pnl`: per account and UTC day of the fill, the realized PnL, kept in each fill's
  transaction; backfilled here by replaying the fills at average cost (the arithmetic of the ledger's positions).

Revision ID: 0027_oms_deposits_quarantine
Revises: 0026_oms_rolling_volume
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date
from decimal import Decimal

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money
from shared.domain.ledger import Position
from shared.domain.types import Symbol

revision = "0027_oms_deposits_quarantine"
down_revision = "0026_oms_rolling_volume"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the three OMS tables, key the venue's deposits by reference, backfill the daily realized PnL."""
    op.create_table(
        "deposits",
        sa.Column("account_id", sa.Text, sa.ForeignKey("oms.trading_accounts.account_id"), primary_key=True),
        sa.Column("reference", sa.Text, primary_key=True),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("applied_at", TS, nullable=True),
        sa.Column("balance_total", Money, nullable=True),
        sa.Column("balance_reserved", Money, nullable=True),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("status IN ('pending', 'applied')", name="status_known"),
        sa.CheckConstraint(
            "(status = 'applied') = (applied_at IS NOT NULL AND balance_total IS NOT NULL)", name="applied_complete"
        ),
        schema="oms",
    )
    op.create_index(
        "ix_deposits_pending", "deposits", ["account_id"], schema="oms", postgresql_where=sa.text("status = 'pending'")
    )
    op.add_column("deposits", sa.Column("reference", sa.Text, nullable=True), schema="paper")
    op.execute("UPDATE paper.deposits SET reference = 'legacy-' || deposit_id WHERE reference IS NULL")
    op.alter_column("deposits", "reference", nullable=False, schema="paper")
    op.create_unique_constraint(
        "uq_paper_deposits_account_reference", "deposits", ["account_id", "reference"], schema="paper"
    )
    op.create_table(
        "quarantined_fills",
        sa.Column("quarantine_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("venue", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("client_order_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=True),
        sa.Column("reason_code", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("fill", JSONB, nullable=False),
        sa.Column("quarantined_at", TS, nullable=False),
        sa.UniqueConstraint("venue", "trade_id", name="uq_quarantined_fills_venue_trade_id"),
        schema="oms",
    )
    op.create_index("ix_quarantined_fills_account", "quarantined_fills", ["account_id"], schema="oms")
    op.create_table(
        "daily_realized_pnl",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("realized_pnl", Money, nullable=False),
        schema="oms",
    )
    _backfill_daily_realized_pnl()


def _backfill_daily_realized_pnl() -> None:
    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT account_id, symbol, side, quantity, price, fee, (filled_at AT TIME ZONE 'UTC')::date AS day "
            "FROM oms.fills ORDER BY account_id, fill_id"
        )
    )
    positions: dict[tuple[str, str], Position] = {}
    pnl: dict[tuple[str, date], Decimal] = defaultdict(Decimal)
    for row in rows:
        before = positions.get((row.account_id, row.symbol), Position(Symbol(row.symbol)))
        notional = row.quantity * row.price  # the booked cost or proceeds of the fill
        if row.side == "buy":
            after = before.after_buy(row.quantity, notional, row.fee)
        else:
            after = before.after_sell(row.quantity, notional, row.fee)
        positions[(row.account_id, row.symbol)] = after
        pnl[(row.account_id, row.day)] += after.realized_pnl - before.realized_pnl
    if pnl:
        bind.execute(
            sa.text("INSERT INTO oms.daily_realized_pnl (account_id, day, realized_pnl) VALUES (:a, :d, :p)"),
            [{"a": account_id, "d": day, "p": value} for (account_id, day), value in pnl.items()],
        )


def downgrade() -> None:
    """Drop what upgrade created."""
    op.drop_table("daily_realized_pnl", schema="oms")
    op.drop_table("quarantined_fills", schema="oms")
    op.drop_constraint("uq_paper_deposits_account_reference", "deposits", schema="paper")
    op.drop_column("deposits", "reference", schema="paper")
    op.drop_table("deposits", schema="oms")
