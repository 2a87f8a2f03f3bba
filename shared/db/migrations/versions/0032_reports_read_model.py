"""Schema `reports`: the read model of the reports service (issue 17), fed by OMS and market-data events.

`fills`, `balance_history`, `cash_flows` and `marks` (one price per symbol and minute) are written by the
service's consumers only; `accounts` lists the accounts seen in any of them. `fills_daily` is the daily rollup of
fees and turnover per (account, symbol): a continuous aggregate where TimescaleDB exists (fills and marks are
then hypertables), a materialized view otherwise; `aether ops refresh-aggregates` refreshes either and records
what it did in `rollup_refreshes`.

Revision ID: 0032_reports_read_model
Revises: 0031_marketdata_features
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from shared.db.base import Money
from shared.db.timescale import make_time_series

revision = "0032_reports_read_model"
down_revision = "0031_marketdata_features"
branch_labels = None
depends_on = None

SCHEMA = "reports"
TS = sa.DateTime(timezone=True)
_DAILY_COLUMNS = """
    account_id, symbol, {bucket} AS day,
    sum(fee)::numeric(38, 18) AS fees, sum(quantity * price)::numeric(38, 18) AS turnover, count(*) AS fills
FROM reports.fills
GROUP BY account_id, symbol, day
"""


def _tables() -> None:
    op.create_table(
        "accounts",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("first_seen_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "fills",
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("fee", Money, nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="side"),
        sa.CheckConstraint("quantity > 0 AND price > 0 AND fee >= 0", name="amounts_valid"),
        # A hypertable's unique keys must include its time column; a replayed fill has the same instant.
        sa.PrimaryKeyConstraint("account_id", "order_id", "trade_id", "occurred_at", name="pk_fills"),
        schema=SCHEMA,
    )
    op.create_index("ix_fills_account_time", "fills", ["account_id", "occurred_at"], schema=SCHEMA)
    op.create_table(
        "balance_history",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("asset", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True),
        sa.Column("total", Money, nullable=False),
        sa.Column("changed_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("total >= 0", name="total_not_negative"),
        schema=SCHEMA,
    )
    op.create_index("ix_balance_history_account_time", "balance_history", ["account_id", "changed_at"], schema=SCHEMA)
    op.create_table(
        "cash_flows",
        sa.Column("account_id", sa.Text, primary_key=True),
        sa.Column("kind", sa.Text, primary_key=True),
        sa.Column("reference", sa.Text, primary_key=True),
        sa.Column("asset", sa.Text, nullable=False),
        sa.Column("amount", Money, nullable=False),
        sa.Column("counterparty_account_id", sa.Text, nullable=True),
        sa.Column("occurred_at", TS, nullable=False),
        sa.Column("received_at", TS, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint("kind IN ('deposit', 'withdrawal', 'transfer_in', 'transfer_out')", name="kind"),
        sa.CheckConstraint("amount > 0", name="amount_positive"),
        schema=SCHEMA,
    )
    op.create_table(
        "marks",
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("bucket_at", TS, nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("observed_at", TS, nullable=False),
        sa.CheckConstraint("price > 0", name="price_positive"),
        sa.CheckConstraint("source IN ('book_mid', 'last_trade')", name="source"),
        sa.PrimaryKeyConstraint("symbol", "bucket_at", name="pk_marks"),
        schema=SCHEMA,
    )
    op.create_table(
        "rollup_refreshes",
        sa.Column("view_name", sa.Text, primary_key=True),
        sa.Column("source_rows", sa.BigInteger, nullable=False),
        sa.Column("window_start", TS, nullable=True),
        sa.Column("rows", sa.BigInteger, nullable=False),
        sa.Column("refreshed_at", TS, nullable=False),
        schema=SCHEMA,
    )


def upgrade() -> None:
    """Create the read model; fills and marks become hypertables and the rollup a continuous aggregate where
    TimescaleDB exists."""
    _tables()
    bind = op.get_bind()
    timescale = make_time_series(bind, f"{SCHEMA}.fills", "occurred_at", "7 days")
    make_time_series(bind, f"{SCHEMA}.marks", "bucket_at", "7 days")
    if timescale:
        # WITH NO DATA: allowed inside the migration's transaction; the first refresh fills it.
        columns = _DAILY_COLUMNS.format(bucket="time_bucket(INTERVAL '1 day', occurred_at)")
        op.execute(
            f"CREATE MATERIALIZED VIEW {SCHEMA}.fills_daily WITH (timescaledb.continuous) AS SELECT {columns} "
            "WITH NO DATA"
        )
    else:
        columns = _DAILY_COLUMNS.format(bucket="date_trunc('day', occurred_at, 'UTC')")
        # WITH DATA (of an empty table): a never-populated view refuses to be read.
        op.execute(f"CREATE MATERIALIZED VIEW {SCHEMA}.fills_daily AS SELECT {columns} WITH DATA")
    # REFRESH ... CONCURRENTLY needs a unique index; a continuous aggregate takes an ordinary one too.
    unique = "" if timescale else "UNIQUE "
    op.execute(f"CREATE {unique}INDEX ix_fills_daily_key ON {SCHEMA}.fills_daily (account_id, symbol, day)")


def downgrade() -> None:
    op.execute(f"DROP MATERIALIZED VIEW IF EXISTS {SCHEMA}.fills_daily")
    for table in ("rollup_refreshes", "marks", "cash_flows", "balance_history", "fills", "accounts"):
        op.drop_table(table, schema=SCHEMA)
