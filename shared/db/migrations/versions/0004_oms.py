"""Schema `oms`: the service's outbox and inbox.

Revision ID: 0004_oms
Revises: 0003_marketdata
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0004_oms"
down_revision = "0003_marketdata"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("oms")


def downgrade() -> None:
    drop_event_tables("oms")
