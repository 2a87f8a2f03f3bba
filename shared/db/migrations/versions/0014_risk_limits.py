"""Schema risk: versioned pre-trade limits, trading state and its history (issue 4, risk limits).

Revision ID: 0014_risk_limits
Revises: 0013_paper
"""

from __future__ import annotations

revision = "0014_risk_limits"
down_revision = "0013_paper"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables arrive with the issue's change; the revision exists so the chain stays linear."""


def downgrade() -> None:
    """Nothing to undo yet."""
