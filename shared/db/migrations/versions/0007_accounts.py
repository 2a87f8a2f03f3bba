"""Schema `accounts`: the service's outbox and inbox.

Revision ID: 0007_accounts
Revises: 0006_hedge
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0007_accounts"
down_revision = "0006_hedge"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("accounts")


def downgrade() -> None:
    drop_event_tables("accounts")
