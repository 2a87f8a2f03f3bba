"""TOTP replay protection (issue 12): `accounts.users.totp_last_step` is the newest accepted 30-second time step.

A code is accepted only by `UPDATE ... WHERE totp_last_step IS NULL OR totp_last_step < :step`, so one code (or an
older one inside the drift window) is never accepted twice, not even by two concurrent requests.

Revision ID: 0024_accounts_totp_step
Revises: 0023_risk_pending_approvals
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0024_accounts_totp_step"
down_revision = "0023_risk_pending_approvals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add `accounts.users.totp_last_step` (NULL: no code accepted yet)."""
    op.add_column("users", sa.Column("totp_last_step", sa.BigInteger, nullable=True), schema="accounts")


def downgrade() -> None:
    """Drop the column."""
    op.drop_column("users", "totp_last_step", schema="accounts")
