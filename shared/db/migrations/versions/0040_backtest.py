"""Schema `backtest`: runs, their results, fills and equity samples, and parameter sweeps (issue 15, docs/backtest.md).

- `sweeps`: a parameter grid over one strategy and one range; its runs are created with it, all `queued`.
- `runs`: one backtest (strategy, parameters, range, scenario, seed, data source) and its lifecycle
  `queued -> running -> done | failed`, with `progress` in [0, 1] written by the worker process.
- `results`: a finished run's metrics, result JSON and HTML report (none when the run asked for none), written in the transaction that marks it done.
- `fills`, `equity`: the trade list and the equity curve of a finished run, for queries (money NUMERIC(38,18)).

`equity` is keyed by run, not by time (a run's samples are read together, over simulated time), so it stays an
ordinary table also where TimescaleDB exists.

Revision ID: 0040_backtest
Revises: 0039_ml
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from shared.db.base import Money

revision = "0040_backtest"
down_revision = "0039_ml"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)
SCHEMA = "backtest"
STATUSES = "status IN ('queued', 'running', 'done', 'failed')"


def upgrade() -> None:
    """Create the five tables."""
    op.create_table(
        "sweeps",
        sa.Column("sweep_id", sa.Text, primary_key=True),
        sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("grid", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("submitted_by", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint(STATUSES, name="status_known"),
        schema=SCHEMA,
    )
    op.create_table(
        "runs",
        sa.Column("run_id", sa.Text, primary_key=True),
        sa.Column("strategy", sa.Text, nullable=False),
        sa.Column("parameters", JSONB, nullable=False),
        sa.Column("start_at", TS, nullable=True),
        sa.Column("end_at", TS, nullable=True),
        sa.Column("scenario", sa.Text, nullable=False),
        sa.Column("seed", sa.BigInteger, nullable=False),
        sa.Column("source", JSONB, nullable=False),
        sa.Column("settings", JSONB, nullable=False),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("progress", sa.Float, nullable=False, server_default="0"),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("submitted_by", sa.Text, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("sweep_id", sa.Text, sa.ForeignKey(f"{SCHEMA}.sweeps.sweep_id"), nullable=True),
        sa.CheckConstraint(STATUSES, name="status_known"),
        sa.CheckConstraint("progress >= 0 AND progress <= 1", name="progress_fraction"),
        sa.CheckConstraint("start_at IS NULL OR end_at IS NULL OR start_at < end_at", name="range_ordered"),
        schema=SCHEMA,
    )
    op.create_index("ix_runs_sweep_status", "runs", ["sweep_id", "status"], schema=SCHEMA)
    op.create_table(
        "results",
        sa.Column("run_id", sa.Text, sa.ForeignKey(f"{SCHEMA}.runs.run_id"), primary_key=True),
        sa.Column("metrics", JSONB, nullable=False),
        sa.Column("result", JSONB, nullable=False),
        sa.Column("report_html", sa.Text, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "fills",
        sa.Column("run_id", sa.Text, sa.ForeignKey(f"{SCHEMA}.runs.run_id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("order_id", sa.Text, nullable=False),
        sa.Column("trade_id", sa.Text, nullable=False),
        sa.Column("symbol", sa.Text, nullable=False),
        sa.Column("side", sa.Text, nullable=False),
        sa.Column("quantity", Money, nullable=False),
        sa.Column("price", Money, nullable=False),
        sa.Column("fee", Money, nullable=False),
        sa.Column("liquidity", sa.Text, nullable=False),
        sa.Column("filled_at", TS, nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name="side_known"),
        sa.CheckConstraint("quantity > 0 AND price > 0", name="positive"),
        schema=SCHEMA,
    )
    op.create_table(
        "equity",
        sa.Column("run_id", sa.Text, sa.ForeignKey(f"{SCHEMA}.runs.run_id"), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("equity", Money, nullable=False),
        sa.Column("positions", JSONB, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    """Drop the five tables."""
    for table in ("equity", "fills", "results"):
        op.drop_table(table, schema=SCHEMA)
    op.drop_index("ix_runs_sweep_status", table_name="runs", schema=SCHEMA)
    op.drop_table("runs", schema=SCHEMA)
    op.drop_table("sweeps", schema=SCHEMA)
