"""Withdrawals from paper accounts (issue 17, item 4).

- `oms.withdrawals`: the OMS's record of a withdrawal, keyed by (account, reference), with the columns of
  `oms.deposits`: `pending` before the venue debits it, `applied` (with the balance it left) in the transaction
  that debits the ledger and publishes `CashFlowRecorded` `withdrawal`.
- `paper.withdrawals`: the paper venue debits an (account, reference) once.

Revision ID: 0038_oms_withdrawals
Revises: 0037_capital_allocation
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import Money

revision = "0038_oms_withdrawals"
down_revision = "0037_capital_allocation"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create `oms.withdrawals` and `paper.withdrawals`."""
    op.create_table(
        "withdrawals",
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
        "ix_withdrawals_pending",
        "withdrawals",
        ["account_id"],
        schema="oms",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "withdrawals",
        sa.Column("withdrawal_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("account_id", sa.Text, sa.ForeignKey("paper.accounts.account_id"), nullable=False),
        sa.Column("reference", sa.Text, nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.UniqueConstraint("account_id", "reference", name="uq_paper_withdrawals_account_reference"),
        schema="paper",
    )


def downgrade() -> None:
    """Drop the two tables."""
    op.drop_table("withdrawals", schema="paper")
    op.drop_index("ix_withdrawals_pending", table_name="withdrawals", schema="oms")
    op.drop_table("withdrawals", schema="oms")
