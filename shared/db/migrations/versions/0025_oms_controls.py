"""The OMS's own copy of what it enforces (issue 11, items 1-2): trading states, limits, exit and approval policies
as their owners publish them on the compacted controls topics (`shared/contracts/controls.py`), the owners'
snapshot markers, and the offset read so far per topic partition (stored in the transaction that applies the
records, so a restart neither skips nor re-applies one).

Revision ID: 0025_oms_controls
Revises: 0024_accounts_totp_step
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0025_oms_controls"
down_revision = "0024_accounts_totp_step"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create `oms.controls`, `oms.control_snapshots` and `oms.control_offsets`."""
    op.create_table(
        "controls",
        sa.Column("control_key", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("value", JSONB, nullable=True),
        # A record under this key that broke its contract: the control is unknown (503) until a valid one arrives.
        sa.Column("violation", sa.Text, nullable=True),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.CheckConstraint(
            "kind IN ('trading_state', 'risk_limits', 'exit_policy', 'approval_policy')", name="kind_known"
        ),
        sa.CheckConstraint("version >= 0", name="version_non_negative"),
        sa.CheckConstraint("(value IS NULL) <> (violation IS NULL)", name="value_or_violation"),
        schema="oms",
    )
    op.create_index("controls_by_account", "controls", ["account_id"], schema="oms")
    op.create_table(
        "control_snapshots",
        sa.Column("owner", sa.Text, primary_key=True),
        sa.Column("records", sa.Integer, nullable=False),
        sa.Column("published_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False),
        sa.CheckConstraint("owner IN ('risk', 'hitl')", name="owner_known"),
        schema="oms",
    )
    op.create_table(
        "control_offsets",
        sa.Column("topic", sa.Text, primary_key=True),
        sa.Column("partition", sa.Integer, primary_key=True),
        sa.Column("next_offset", sa.BigInteger, nullable=False),
        schema="oms",
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("control_offsets", schema="oms")
    op.drop_table("control_snapshots", schema="oms")
    op.drop_index("controls_by_account", table_name="controls", schema="oms")
    op.drop_table("controls", schema="oms")
