"""Risk changes waiting for a director (issue 12, item 8): a limit raise or an account's resume from HALTED that
the account's approval policy sends to the directors is kept in `risk.pending_approvals` with the exact
`ApprovalRequested` payload and its hash until `ApprovalDecided` settles it.

Revision ID: 0023_risk_pending_approvals
Revises: 0022_order_approval_payload
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0023_risk_pending_approvals"
down_revision = "0022_order_approval_payload"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create `risk.pending_approvals`."""
    op.create_table(
        "pending_approvals",
        sa.Column("subject_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False),
        sa.Column("payload_hash", sa.Text, nullable=False),
        sa.Column("requested_by", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("outcome", sa.Text, nullable=True),
        sa.Column("resolved_at", TS, nullable=True),
        sa.CheckConstraint("kind IN ('limit_raise', 'trading_resume')", name="kind_known"),
        schema="risk",
    )


def downgrade() -> None:
    """Drop it."""
    op.drop_table("pending_approvals", schema="risk")
