"""Signed audit anchors, stored outside the audit schema (issue 5).

Revision ID: 0019_audit_anchors
Revises: 0018_hitl_approvals
"""

from __future__ import annotations

revision = "0019_audit_anchors"
down_revision = "0018_hitl_approvals"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Tables arrive with the issue's change; the revision exists so the chain stays linear."""


def downgrade() -> None:
    """Nothing to undo yet."""
