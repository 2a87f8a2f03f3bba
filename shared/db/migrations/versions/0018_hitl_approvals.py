"""Schema hitl: approval policies, requests, votes and decisions (issue 5).

Revision ID: 0018_hitl_approvals
Revises: 0017_accounts_users
"""

from __future__ import annotations

revision = "0018_hitl_approvals"
down_revision = "0017_accounts_users"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables arrive with the issue's change; the revision exists so the chain stays linear."""


def downgrade() -> None:
    """Nothing to undo yet."""
