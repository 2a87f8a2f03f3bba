"""Schema `hedge`: the service's outbox and inbox.

Revision ID: 0006_hedge
Revises: 0005_risk
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0006_hedge"
down_revision = "0005_risk"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("hedge")


def downgrade() -> None:
    drop_event_tables("hedge")
