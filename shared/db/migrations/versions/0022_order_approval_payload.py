"""Approval payloads of held orders (issue 12, item 7): `oms.orders.approval_payload` keeps the exact
`ApprovalRequested` payload the OMS asked the directors about, so that at release the OMS checks the decision's
hash against it and the order it sends against its fields. Orders held before this column have none: an
approval for them is refused at release (fail closed).

Revision ID: 0022_order_approval_payload
Revises: 0021_hedge_balances
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0022_order_approval_payload"
down_revision = "0021_hedge_balances"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable column."""
    op.add_column("orders", sa.Column("approval_payload", JSONB(none_as_null=True), nullable=True), schema="oms")


def downgrade() -> None:
    """Drop it."""
    op.drop_column("orders", "approval_payload", schema="oms")
