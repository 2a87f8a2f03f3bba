"""The fee tier's 30-day volume is rolling (issue 11): `oms.trading_accounts.volume_30d` only ever grew, so it is
dropped; the OMS sums the account's fills of the last 30 days (`ix_fills_account_time`) when it needs the tier.

Revision ID: 0026_oms_rolling_volume
Revises: 0025_oms_controls
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0026_oms_rolling_volume"
down_revision = "0025_oms_controls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Drop the ever-growing counter."""
    op.drop_column("trading_accounts", "volume_30d", schema="oms")


def downgrade() -> None:
    """Bring the column back, filled with the last 30 days of fills."""
    op.add_column(
        "trading_accounts",
        sa.Column("volume_30d", sa.Numeric(38, 18), nullable=False, server_default="0"),
        schema="oms",
    )
    op.execute(
        "UPDATE oms.trading_accounts a SET volume_30d = COALESCE((SELECT sum(f.quantity * f.price) FROM oms.fills f"
        " WHERE f.account_id = a.account_id AND f.filled_at >= now() - interval '30 days'), 0)"
    )
