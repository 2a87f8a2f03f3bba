"""Schema `reports`: the service's outbox and inbox.

Revision ID: 0009_reports
Revises: 0008_hitl
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0009_reports"
down_revision = "0008_hitl"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("reports")


def downgrade() -> None:
    drop_event_tables("reports")
