"""Schema `paper`: the outbox and inbox every service process has, now that the paper venue runs as its own.

The venue's books (orders, fills, balances, deposits) are there already; the process's outbox relay and the
`/paper/info` backlog read these tables (nothing is published through them yet).

Revision ID: 0028_paper_events
Revises: 0027_oms_deposits_quarantine
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0028_paper_events"
down_revision = "0027_oms_deposits_quarantine"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("paper")


def downgrade() -> None:
    drop_event_tables("paper")
