"""Schema risk: exit brackets and their legs (issue 4, exit brackets).

Revision ID: 0015_risk_exits
Revises: 0014_risk_limits
"""

from __future__ import annotations

revision = "0015_risk_exits"
down_revision = "0014_risk_limits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables arrive with the issue's change; the revision exists so the chain stays linear."""


def downgrade() -> None:
    """Nothing to undo yet."""
