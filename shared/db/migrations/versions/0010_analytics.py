"""Schema `analytics`: the service's outbox and inbox.

Revision ID: 0010_analytics
Revises: 0009_reports
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0010_analytics"
down_revision = "0009_reports"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("analytics")


def downgrade() -> None:
    drop_event_tables("analytics")
