"""Every SQL statement of the backtest service (schema `backtest`).

The functions take a synchronous `Connection`: worker processes and the sweep CLI call them inside
`engine.begin()`, the HTTP service through `AsyncSession.run_sync` inside its unit of work. Neither commits here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Connection

from services.backtest.spec import RunSettings, RunSpec, Source
from shared.backtest.engine import BacktestRun
from shared.backtest.strategy import Fill
from shared.db.base import NAMING_CONVENTION, Money
from shared.domain.money import format_decimal
from shared.domain.types import Liquidity, OrderSide

SCHEMA = "backtest"
TS = sa.DateTime(timezone=True)
QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
FINISHED = (DONE, FAILED)

metadata = sa.MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)

sweeps = sa.Table(
    "sweeps",
    metadata,
    sa.Column("sweep_id", sa.Text, primary_key=True),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("grid", JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("submitted_by", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("finished_at", TS),
)
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("strategy", sa.Text, nullable=False),
    sa.Column("parameters", JSONB, nullable=False),
    sa.Column("start_at", TS),
    sa.Column("end_at", TS),
    sa.Column("scenario", sa.Text, nullable=False),
    sa.Column("seed", sa.BigInteger, nullable=False),
    sa.Column("source", JSONB, nullable=False),
    sa.Column("settings", JSONB, nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("progress", sa.Float, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("submitted_by", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("started_at", TS),
    sa.Column("finished_at", TS),
    sa.Column("sweep_id", sa.Text),
)
results = sa.Table(
    "results",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("metrics", JSONB, nullable=False),
    sa.Column("result", JSONB, nullable=False),
    sa.Column("report_html", sa.Text),
    sa.Column("created_at", TS, nullable=False),
)
fills = sa.Table(
    "fills",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
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
)
equity = sa.Table(
    "equity",
    metadata,
    sa.Column("run_id", sa.Text, primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("at", TS, nullable=False),
    sa.Column("equity", Money, nullable=False),
    sa.Column("positions", JSONB, nullable=False),
)


@dataclass(frozen=True)
class RunRow:
    """A run as stored: its spec and where it stands."""

    run_id: str
    spec: RunSpec
    status: str
    progress: float
    error: str | None
    attempts: int
    submitted_by: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    sweep_id: str | None


@dataclass(frozen=True)
class SweepRow:
    """A sweep as stored, with how many of its runs are in each status."""

    sweep_id: str
    strategy: str
    grid: dict[str, list[str]]
    status: str
    submitted_by: str
    created_at: datetime
    finished_at: datetime | None
    counts: dict[str, int]


def _spec(row: Any) -> RunSpec:
    return RunSpec(
        strategy=row.strategy,
        parameters=dict(row.parameters),
        source=Source.from_json(row.source),
        start=row.start_at,
        end=row.end_at,
        scenario=row.scenario,
        seed=row.seed,
        settings=RunSettings.from_json(row.settings),
    )


def _run(row: Any) -> RunRow:
    return RunRow(
        row.run_id,
        _spec(row),
        row.status,
        row.progress,
        row.error,
        row.attempts,
        row.submitted_by,
        row.created_at,
        row.started_at,
        row.finished_at,
        row.sweep_id,
    )


def insert_run(
    conn: Connection, run_id: str, spec: RunSpec, submitted_by: str, now: datetime, sweep_id: str | None = None
) -> None:
    """Record a new run, `queued`."""
    conn.execute(
        runs.insert().values(
            run_id=run_id,
            strategy=spec.strategy,
            parameters=dict(spec.parameters),
            start_at=spec.start,
            end_at=spec.end,
            scenario=spec.scenario,
            seed=spec.seed,
            source=spec.source.as_json(),
            settings=spec.settings.as_json(),
            status=QUEUED,
            progress=0.0,
            attempts=0,
            submitted_by=submitted_by,
            created_at=now,
            sweep_id=sweep_id,
        )
    )


def insert_sweep(
    conn: Connection, sweep_id: str, strategy: str, grid: dict[str, list[str]], submitted_by: str, now: datetime
) -> None:
    """Record a new sweep, `queued` (its runs are inserted with `insert_run`)."""
    conn.execute(
        sweeps.insert().values(
            sweep_id=sweep_id, strategy=strategy, grid=grid, status=QUEUED, submitted_by=submitted_by, created_at=now
        )
    )


def get_run(conn: Connection, run_id: str) -> RunRow | None:
    """The run, or None."""
    row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).one_or_none()
    return None if row is None else _run(row)


def get_runs(conn: Connection, run_ids: Sequence[str]) -> dict[str, RunRow]:
    """The runs found among `run_ids`, by id."""
    rows = conn.execute(sa.select(runs).where(runs.c.run_id.in_(run_ids))).all()
    return {row.run_id: _run(row) for row in rows}


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a run: only the latest attempt may write its progress and outcome."""

    run_id: str
    attempt: int
    spec: RunSpec


def claim_run(conn: Connection, run_id: str, now: datetime) -> Claim | None:
    """Turn a `queued` run `running` for a new attempt; None when it is not queued (someone else has it)."""
    row = conn.execute(
        runs.update()
        .where(runs.c.run_id == run_id, runs.c.status == QUEUED)
        .values(status=RUNNING, started_at=now, progress=0.0, error=None, attempts=runs.c.attempts + 1)
        .returning(*runs.c)
    ).one_or_none()
    if row is None:
        return None
    if row.sweep_id is not None:
        conn.execute(
            sweeps.update().where(sweeps.c.sweep_id == row.sweep_id, sweeps.c.status == QUEUED).values(status=RUNNING)
        )
    return Claim(run_id, row.attempts, _spec(row))


def _held(claim: Claim) -> tuple[sa.ColumnElement[bool], ...]:
    return (runs.c.run_id == claim.run_id, runs.c.status == RUNNING, runs.c.attempts == claim.attempt)


def set_progress(conn: Connection, claim: Claim, progress: float) -> None:
    """Record how far a running run is."""
    conn.execute(runs.update().where(*_held(claim)).values(progress=min(progress, 1.0)))


def _close_sweep(conn: Connection, run_id: str, now: datetime) -> None:
    sweep_id = conn.execute(sa.select(runs.c.sweep_id).where(runs.c.run_id == run_id)).scalar_one()
    if sweep_id is None:
        return
    statuses = set(conn.execute(sa.select(runs.c.status).where(runs.c.sweep_id == sweep_id).distinct()).scalars())
    if statuses <= set(FINISHED):
        status = FAILED if FAILED in statuses else DONE
        conn.execute(sweeps.update().where(sweeps.c.sweep_id == sweep_id).values(status=status, finished_at=now))


def finish_run(
    conn: Connection, claim: Claim, run: BacktestRun, data: dict[str, Any], report_html: str | None, now: datetime
) -> bool:
    """Mark the run `done` and store its results, fills and equity curve, in the caller's transaction; False (and
    nothing written) when the claim is stale (the run was put back and claimed again)."""
    run_id = claim.run_id
    done = runs.update().where(*_held(claim)).values(status=DONE, progress=1.0, error=None, finished_at=now)
    if conn.execute(done).rowcount != 1:
        return False
    conn.execute(
        results.insert().values(
            run_id=run_id, metrics=data["metrics"], result=data, report_html=report_html, created_at=now
        )
    )
    if run.fills:
        conn.execute(
            fills.insert(),
            [
                {
                    "run_id": run_id,
                    "seq": seq,
                    "order_id": f.order_id,
                    "trade_id": f.trade_id,
                    "symbol": f.symbol,
                    "side": f.side.value,
                    "quantity": f.quantity,
                    "price": f.price,
                    "fee": f.fee,
                    "liquidity": f.liquidity.value,
                    "filled_at": f.at,
                }
                for seq, f in enumerate(run.fills)
            ],
        )
    if run.samples:
        conn.execute(
            equity.insert(),
            [
                {
                    "run_id": run_id,
                    "seq": seq,
                    "at": s.at,
                    "equity": s.equity,
                    "positions": {sym: format_decimal(q) for sym, q in zip(run.symbols, s.positions, strict=True)},
                }
                for seq, s in enumerate(run.samples)
            ],
        )
    _close_sweep(conn, run_id, now)
    return True


def fail_run(conn: Connection, claim: Claim, error: str, now: datetime) -> bool:
    """Mark the run `failed` with the reason; False when the claim is stale."""
    failed = runs.update().where(*_held(claim)).values(status=FAILED, error=error, finished_at=now)
    if conn.execute(failed).rowcount != 1:
        return False
    _close_sweep(conn, claim.run_id, now)
    return True


def result_of(conn: Connection, run_id: str) -> dict[str, Any] | None:
    """The stored result JSON of a finished run, or None."""
    value: dict[str, Any] | None = conn.execute(
        sa.select(results.c.result).where(results.c.run_id == run_id)
    ).scalar_one_or_none()
    return value


def report_of(conn: Connection, run_id: str) -> tuple[str | None] | None:
    """(the stored HTML report or None when the run made none) of a finished run, or None."""
    row = conn.execute(sa.select(results.c.report_html).where(results.c.run_id == run_id)).one_or_none()
    return None if row is None else (row.report_html,)


def metrics_of(conn: Connection, run_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Stored metrics by run id, for those of `run_ids` that have results."""
    rows = conn.execute(sa.select(results.c.run_id, results.c.metrics).where(results.c.run_id.in_(run_ids))).all()
    return {row.run_id: row.metrics for row in rows}


def fills_of(conn: Connection, run_id: str) -> list[Fill]:
    """A finished run's fills in the order they happened."""
    rows = conn.execute(sa.select(fills).where(fills.c.run_id == run_id).order_by(fills.c.seq)).all()
    return [
        Fill(
            r.order_id,
            r.trade_id,
            r.symbol,
            OrderSide(r.side),
            r.quantity,
            r.price,
            r.fee,
            Liquidity(r.liquidity),
            r.filled_at,
        )
        for r in rows
    ]


def equity_of(conn: Connection, run_id: str) -> list[tuple[datetime, Decimal]]:
    """A finished run's equity samples in time order."""
    rows = conn.execute(
        sa.select(equity.c.at, equity.c.equity).where(equity.c.run_id == run_id).order_by(equity.c.seq)
    ).all()
    return [(r.at, r.equity) for r in rows]


def get_sweep(conn: Connection, sweep_id: str) -> SweepRow | None:
    """The sweep with its run counts by status, or None."""
    row = conn.execute(sa.select(sweeps).where(sweeps.c.sweep_id == sweep_id)).one_or_none()
    if row is None:
        return None
    counted = conn.execute(
        sa.select(runs.c.status, sa.func.count()).where(runs.c.sweep_id == sweep_id).group_by(runs.c.status)
    ).all()
    counts: dict[str, int] = {status: int(count) for status, count in counted}
    return SweepRow(
        row.sweep_id, row.strategy, row.grid, row.status, row.submitted_by, row.created_at, row.finished_at, counts
    )


def sweep_runs(conn: Connection, sweep_id: str) -> list[RunRow]:
    """Every run of a sweep, in the order they were created."""
    rows = conn.execute(
        sa.select(runs).where(runs.c.sweep_id == sweep_id).order_by(runs.c.created_at, runs.c.run_id)
    ).all()
    return [_run(row) for row in rows]


def requeue_unfinished(conn: Connection, sweep_id: str) -> list[str]:
    """Put a sweep's `running` and `failed` runs back to `queued` (their worker is gone); return every queued id."""
    conn.execute(
        runs.update()
        .where(runs.c.sweep_id == sweep_id, runs.c.status.in_((RUNNING, FAILED)))
        .values(status=QUEUED, progress=0.0)
    )
    conn.execute(sweeps.update().where(sweeps.c.sweep_id == sweep_id).values(status=RUNNING, finished_at=None))
    return list(
        conn.execute(
            sa.select(runs.c.run_id)
            .where(runs.c.sweep_id == sweep_id, runs.c.status == QUEUED)
            .order_by(runs.c.created_at, runs.c.run_id)
        ).scalars()
    )


def recover_runs(conn: Connection) -> list[str]:
    """Runs outside sweeps a stopped service left `queued` or `running`, back to `queued`; returns their ids."""
    alone = (runs.c.sweep_id.is_(None),)
    conn.execute(runs.update().where(*alone, runs.c.status == RUNNING).values(status=QUEUED, progress=0.0))
    return list(
        conn.execute(
            sa.select(runs.c.run_id).where(*alone, runs.c.status == QUEUED).order_by(runs.c.created_at)
        ).scalars()
    )
