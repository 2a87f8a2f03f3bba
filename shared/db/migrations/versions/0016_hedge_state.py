"""Schema hedge: operator overrides with history, kill-switch recommendations (issue 4, hedge).

Revision ID: 0016_hedge_state
Revises: 0015_risk_exits
"""

from __future__ import annotations

revision = "0016_hedge_state"
down_revision = "0015_risk_exits"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables arrive with the issue's change; the revision exists so the chain stays linear."""


def downgrade() -> None:
    """Nothing to undo yet."""
