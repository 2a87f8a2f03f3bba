"""Schema `risk`: the service's outbox and inbox.

Revision ID: 0005_risk
Revises: 0004_oms
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0005_risk"
down_revision = "0004_oms"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("risk")


def downgrade() -> None:
    drop_event_tables("risk")
