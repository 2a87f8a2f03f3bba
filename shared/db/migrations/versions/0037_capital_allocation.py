"""Transfers between two of the firm's accounts (issue 17, item 4).

- `oms.transfers`: the OMS's record of a transfer, keyed by its reference (the allocation proposal id). It is
  written `pending` before the venue moves the money and turns `applied` in the one transaction that debits the
  source ledger and credits the destination ledger: a repeat of the reference answers that, never moves twice.
  A transfer asked by the capital allocator is first held `awaiting_approval` with the request payload the
  directors approve (its hash is checked at release); a rejection or expiry makes it `rejected`.
- `paper.transfers`: the paper venue moves a reference once (debit and credit in one transaction).
- `reports.allocation_targets`: each account's target share of firm NAV and its band (the allocator's).
- `reports.allocation_proposals`: the allocator's rebalancing proposals; at most one `proposed` at a time.

Revision ID: 0037_capital_allocation
Revises: 0036_analytics_pnl_jumps
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money

revision = "0037_capital_allocation"
down_revision = "0036_analytics_pnl_jumps"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create `oms.transfers` and `paper.transfers`."""
    op.create_table(
        "transfers",
        sa.Column("reference", sa.Text, primary_key=True),
        sa.Column("from_account_id", sa.Text, sa.ForeignKey("oms.trading_accounts.account_id"), nullable=False),
        sa.Column("to_account_id", sa.Text, sa.ForeignKey("oms.trading_accounts.account_id"), nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("applied_at", TS, nullable=True),
        sa.Column("approval_payload", JSONB, nullable=True),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("from_account_id <> to_account_id", name="two_accounts"),
        sa.CheckConstraint("status IN ('awaiting_approval', 'pending', 'applied', 'rejected')", name="status_known"),
        sa.CheckConstraint("(status = 'applied') = (applied_at IS NOT NULL)", name="applied_complete"),
        schema="oms",
    )
    op.create_index(
        "ix_transfers_pending",
        "transfers",
        ["from_account_id"],
        schema="oms",
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_table(
        "transfers",
        sa.Column("transfer_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("reference", sa.Text, nullable=False, unique=True),
        sa.Column("from_account_id", sa.Text, sa.ForeignKey("paper.accounts.account_id"), nullable=False),
        sa.Column("to_account_id", sa.Text, sa.ForeignKey("paper.accounts.account_id"), nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("from_account_id <> to_account_id", name="two_accounts"),
        schema="paper",
    )
    op.create_table(
        "allocation_targets",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("target_share", sa.Numeric(38, 18), nullable=False),
        sa.Column("band", sa.Numeric(38, 18), nullable=False),
        sa.Column("set_by", sa.Text, nullable=False),
        sa.Column("set_at", TS, nullable=False),
        sa.CheckConstraint("target_share >= 0 AND target_share <= 1", name="share_fraction"),
        sa.CheckConstraint("band >= 0 AND band < 1", name="band_fraction"),
        schema="reports",
    )
    op.create_table(
        "allocation_proposals",
        sa.Column("proposal_id", sa.Text, primary_key=True),
        sa.Column("from_account_id", sa.Text, nullable=False),
        sa.Column("to_account_id", sa.Text, nullable=False),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("drifted_account_id", sa.Text, nullable=False),
        sa.Column("share", sa.Numeric(38, 18), nullable=False),
        sa.Column("target_share", sa.Numeric(38, 18), nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("proposed_at", TS, nullable=False),
        sa.Column("decided_at", TS, nullable=True),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        sa.CheckConstraint("status IN ('proposed', 'approved', 'rejected', 'expired')", name="status_known"),
        schema="reports",
    )
    op.execute(
        "CREATE UNIQUE INDEX ux_allocation_proposals_open ON reports.allocation_proposals ((true))"
        " WHERE status = 'proposed'"
    )


def downgrade() -> None:
    """Drop the four tables."""
    op.drop_table("allocation_proposals", schema="reports")
    op.drop_table("allocation_targets", schema="reports")
    op.drop_table("transfers", schema="paper")
    op.drop_index("ix_transfers_pending", table_name="transfers", schema="oms")
    op.drop_table("transfers", schema="oms")
