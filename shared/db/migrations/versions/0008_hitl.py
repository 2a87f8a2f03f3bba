"""Schema `hitl`: the service's outbox and inbox.

Revision ID: 0008_hitl
Revises: 0007_accounts
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0008_hitl"
down_revision = "0007_accounts"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("hitl")


def downgrade() -> None:
    drop_event_tables("hitl")
