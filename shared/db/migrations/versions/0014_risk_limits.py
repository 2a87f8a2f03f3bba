"""Schema risk: versioned pre-trade limits, trading state and its history (issue 4, risk limits).

Also `oms.orders.exits`: the exit instructions an entry order carried (null when none).

Revision ID: 0014_risk_limits
Revises: 0013_paper
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014_risk_limits"
down_revision = "0013_paper"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
STATES = "state IN ('active', 'reducing', 'halted')"
SCOPES = "(scope = 'global' AND account_id IS NULL) OR (scope = 'account' AND account_id IS NOT NULL)"


def upgrade() -> None:
    op.create_table(
        "limits",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("limits", JSONB, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("version >= 1", name="version_positive"),
        schema="risk",
    )
    op.create_table(
        "trading_state",
        sa.Column("scope_key", sa.Text, primary_key=True),  # "global" or "account:<account_id>"
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.CheckConstraint(STATES, name="state_known"),
        sa.CheckConstraint(SCOPES, name="scope_account"),
        schema="risk",
    )
    op.create_table(
        "trading_state_history",
        sa.Column("history_id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("scope_key", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=True),
        sa.Column("state", sa.Text, nullable=False),
        sa.Column("previous", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.UniqueConstraint("scope_key", "version", name="uq_trading_state_history_version"),
        sa.CheckConstraint(STATES, name="state_known"),
        schema="risk",
    )
    op.add_column("orders", sa.Column("exits", JSONB, nullable=True), schema="oms")


def downgrade() -> None:
    op.drop_column("orders", "exits", schema="oms")
    for table in ("trading_state_history", "trading_state", "limits"):
        op.drop_table(table, schema="risk")
