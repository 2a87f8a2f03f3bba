"""Schema `ml`: the outbox and inbox of the signal worker and the signal-follower strategy (docs/ml.md).

MLflow's own tables live in their own database (`aether_mlflow`, docs/dependencies.md), never here.

Revision ID: 0039_ml
Revises: 0038_oms_withdrawals
"""

from __future__ import annotations

from shared.db.migration_ops import create_event_tables, drop_event_tables

revision = "0039_ml"
down_revision = "0038_oms_withdrawals"  # brief: 0028_paper_events; that leaves two heads here (lead re-chains)
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_event_tables("ml")


def downgrade() -> None:
    drop_event_tables("ml")
