"""Schema accounts: trading accounts, users, grants, refresh tokens, TOTP, encrypted exchange credentials (issue 5).

Revision ID: 0017_accounts_users
Revises: 0016_hedge_state
"""

from __future__ import annotations

revision = "0017_accounts_users"
down_revision = "0016_hedge_state"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables arrive with the issue's change; the revision exists so the chain stays linear."""


def downgrade() -> None:
    """Nothing to undo yet."""
