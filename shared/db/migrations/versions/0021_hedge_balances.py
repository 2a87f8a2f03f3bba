"""Hedge balances from OMS events (issue 10): `hedge.balances` keeps each (account, asset) balance at the newest
`BalanceChanged` version (`changed_at`: the OMS's time, `received_at`: the hedge's), replacing the JSON snapshot `hedge.accounts.holdings` that the NAV poller fetched from
the OMS's REST API. Existing snapshots are carried over at version 0, so any event supersedes them.

Revision ID: 0021_hedge_balances
Revises: 0020_hedge_override_approval
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money

revision = "0021_hedge_balances"
down_revision = "0020_hedge_override_approval"
branch_labels = None
depends_on = None

SCHEMA = "hedge"
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create `hedge.balances`, carry the snapshots over, drop `hedge.accounts.holdings`."""
    op.create_table(
        "balances",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("asset", sa.Text, primary_key=True),
        sa.Column("total", Money, nullable=False),
        sa.Column("reserved", Money, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("total >= 0 AND reserved >= 0 AND reserved <= total", name="amounts_valid"),
        sa.CheckConstraint("version >= 0", name="version_not_negative"),
        schema=SCHEMA,
    )
    op.execute(
        f"""
        INSERT INTO {SCHEMA}.balances (account_id, asset, total, reserved, version, changed_at)
        SELECT a.account_id, h.key, (h.value ->> 'total')::numeric, COALESCE((h.value ->> 'reserved')::numeric, 0),
               0, COALESCE(a.holdings_at, now())
        FROM {SCHEMA}.accounts AS a, jsonb_each(a.holdings) AS h
        WHERE a.holdings IS NOT NULL
        """  # noqa: S608 - constant schema name
    )
    op.drop_column("accounts", "holdings", schema=SCHEMA)


def downgrade() -> None:
    """Rebuild the JSON snapshots from `hedge.balances`, then drop it."""
    op.add_column("accounts", sa.Column("holdings", JSONB, nullable=True), schema=SCHEMA)
    op.execute(
        f"""
        UPDATE {SCHEMA}.accounts AS a
        SET holdings = b.holdings
        FROM (
            SELECT account_id,
                   jsonb_object_agg(asset, jsonb_build_object('total', total::text, 'reserved', reserved::text))
                       AS holdings
            FROM {SCHEMA}.balances
            GROUP BY account_id
        ) AS b
        WHERE a.account_id = b.account_id
        """  # noqa: S608 - constant schema name
    )
    op.drop_table("balances", schema=SCHEMA)
