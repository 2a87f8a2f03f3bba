"""Schema `backtest`: the service's outbox and inbox.

Revision ID: 0011_backtest
Revises: 0010_analytics
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0011_backtest"
down_revision = "0010_analytics"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("backtest")


def downgrade() -> None:
    drop_event_tables("backtest")
