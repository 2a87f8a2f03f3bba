"""`aether backtest run`: one strategy over recorded files, with a progress bar; writes result.json and report.html.

It lives in `aether/` because it reads recorded market data with `data.replay.source` (the one definition of that
file format), which the pure engine in `shared/backtest` may not import.
"""

from __future__ import annotations

import getpass
import os
from concurrent.futures import as_completed
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import sqlalchemy as sa
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from data.replay.source import SourceError, load_file
from services.backtest import repository
from services.backtest.config import BacktestSettings
from services.backtest.service import new_id
from services.backtest.spec import DEFAULT_BALANCES, RunSettings, RunSpec, Source, check_grid, check_spec, load_streams
from services.backtest.worker import execute_run, worker_pool
from shared.backtest.bars import BacktestInputError, Bar, read_bars
from shared.backtest.engine import BacktestConfig, BacktestEngine, Latency
from shared.backtest.results import metrics, write_reports
from shared.backtest.strategies import make_strategy
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.db.engine import sync_url
from shared.marketdata import MarketData
from shared.venues.instruments import venue_precision

console = Console(stderr=True)
MAX_SWEEP_RUNS = BacktestSettings.model_fields["backtest_max_sweep_runs"].default
app = typer.Typer(help="Backtests on the paper venue's matching, fees, ledger and limits", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Backtests on the paper venue's matching, fees, ledger and limits."""


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


def _pairs(option: str, values: list[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        name, sep, text = value.partition("=")
        if not sep or not name:
            raise BacktestInputError(f"{option}: expected NAME=VALUE, got {value!r}")
        pairs[name] = text
    return pairs


def _time(option: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BacktestInputError(f"{option}: not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise BacktestInputError(f"{option}: needs a UTC offset: {text!r}")
    return value


def _within(at: datetime, start: datetime | None, end: datetime | None) -> bool:
    return (start is None or at >= start) and (end is None or at < end)


@app.command("run")
def run(
    strategy: Annotated[str, typer.Option(help="ema_cross, market_maker or signal_follower")],
    out: Annotated[Path, typer.Option(help="directory for result.json and report.html")],
    from_file: Annotated[list[Path], typer.Option(help="recorded market data (replay CSV/Parquet), repeatable")] = [],  # noqa: B006
    bars_file: Annotated[list[Path], typer.Option(help="candles (start,symbol,open,high,low,close,volume)")] = [],  # noqa: B006
    bar_seconds: Annotated[
        int, typer.Option(min=1, help="bar length: of --bars-file, and bars built from prints")
    ] = 60,
    param: Annotated[list[str], typer.Option(help="strategy parameter NAME=VALUE, repeatable")] = [],  # noqa: B006
    balance: Annotated[list[str], typer.Option(help="initial balance ASSET=AMOUNT, repeatable")] = [],  # noqa: B006
    start: Annotated[str | None, typer.Option(help="first instant (ISO 8601, inclusive)")] = None,
    end: Annotated[str | None, typer.Option(help="end instant (ISO 8601, exclusive)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the latency draws")] = 0,
    latency_ms: Annotated[float, typer.Option(min=0, help="base submit/cancel latency")] = 50.0,
    jitter_ms: Annotated[float, typer.Option(min=0, help="uniform extra latency up to this")] = 50.0,
    max_gap_s: Annotated[float, typer.Option(min=0, help="a longer hole in market data is an error")] = 600.0,
    venue: Annotated[str, typer.Option(help="instrument rules of this venue")] = "kraken",
) -> None:
    """Run one strategy over files and write its results."""
    try:
        chosen = make_strategy(strategy, _pairs("--param", param))
        first, last = _time("--start", start), _time("--end", end)
        if first is not None and last is not None and last <= first:
            raise BacktestInputError(f"--end {end} is not after --start {start}")
        if not from_file and not bars_file:
            raise BacktestInputError("give at least one --from-file or --bars-file")
        interval = timedelta(seconds=bar_seconds)
        balances = {k: Decimal(v) for k, v in (_pairs("--balance", balance) or {"USD": "100000"}).items()}
        streams: list[list[MarketData] | list[Bar]] = []
        for path in from_file:
            messages = [m for m in load_file(path) if _within(m.timestamp, first, last)]
            if not messages:
                raise BacktestInputError(f"{path}: no data in the requested range")
            streams.append(messages)
        for path in bars_file:
            bars = [b for b in read_bars(path, interval) if _within(b.start, first, last)]
            if not bars:
                raise BacktestInputError(f"{path}: no bars in the requested range")
            streams.append(bars)
        config = BacktestConfig(
            specs=venue_precision(venue).specs(),
            initial_balances=balances,
            seed=seed,
            latency=Latency(timedelta(milliseconds=latency_ms), timedelta(milliseconds=jitter_ms)),
            bar_interval=interval if from_file else None,
            max_gap=timedelta(seconds=max_gap_s),
        )
        engine = BacktestEngine(config, chosen)
        total = sum(len(s) if not s or not isinstance(s[0], Bar) else 2 * len(s) for s in streams)
        columns = (TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("events", total=total)
            result = engine.run(
                streams, bar_interval=interval, progress=lambda done: progress.update(task, completed=done)
            )
            progress.update(task, completed=total)
    except (BacktestInputError, SourceError, InvalidOperation) as exc:
        raise _fail(str(exc) or type(exc).__name__) from None
    json_path, html_path = write_reports(result, out)
    figures = metrics(result)
    console.print(
        f"{figures['strategy']}: pnl {figures['pnl']} {figures['quote']}, fees {figures['fees']}, "
        f"max drawdown {figures['max_drawdown']}, {figures['fills']} fills, {figures['events']} events",
        highlight=False,
    )
    typer.echo(f"{json_path}\n{html_path}")


def _grid(values: list[str]) -> dict[str, list[str]]:
    grid: dict[str, list[str]] = {}
    for name, text in _pairs("--grid", values).items():
        points = [part.strip() for part in text.split(",") if part.strip()]
        if not points:
            raise BacktestInputError(f"--grid {name}: give at least one value, e.g. {name}=5,10,20")
        grid[name] = points
    if not grid:
        raise BacktestInputError("give at least one --grid NAME=V1,V2,...")
    return grid


def _create_sweep(engine: Engine, spec: RunSpec, grid: dict[str, list[str]], data_dir: Path) -> tuple[str, list[str]]:
    points = check_grid(spec.strategy, spec.parameters, grid, MAX_SWEEP_RUNS)
    first = replace(spec, parameters=points[0])  # the fixed parameters alone may break a rule (fast < slow)
    check_spec(first, data_dir)
    load_streams(first, data_dir)  # an empty or gapped range fails here, before any run is recorded
    sweep_id, run_ids, now = new_id(), [new_id() for _ in points], datetime.now(UTC)
    with engine.begin() as conn:
        repository.insert_sweep(conn, sweep_id, spec.strategy, grid, getpass.getuser(), now)
        for run_id, point in zip(run_ids, points, strict=True):
            repository.insert_run(conn, run_id, replace(spec, parameters=point), getpass.getuser(), now, sweep_id)
    return sweep_id, run_ids


@app.command("sweep")
def sweep(
    data_dir: Annotated[Path, typer.Option(help="the directory the data files are named relative to")] = Path(),
    strategy: Annotated[str | None, typer.Option(help="ema_cross, market_maker or signal_follower")] = None,
    grid: Annotated[list[str], typer.Option(help="a grid axis NAME=V1,V2,..., repeatable (cartesian product)")] = [],  # noqa: B006
    param: Annotated[list[str], typer.Option(help="a fixed strategy parameter NAME=VALUE, repeatable")] = [],  # noqa: B006
    from_file: Annotated[list[str], typer.Option(help="recorded market data under --data-dir, repeatable")] = [],  # noqa: B006
    bars_file: Annotated[list[str], typer.Option(help="candles under --data-dir, repeatable")] = [],  # noqa: B006
    bar_seconds: Annotated[int, typer.Option(min=1, help="bar length")] = 60,
    balance: Annotated[list[str], typer.Option(help="initial balance ASSET=AMOUNT, repeatable")] = [],  # noqa: B006
    start: Annotated[str | None, typer.Option(help="first instant (ISO 8601, inclusive)")] = None,
    end: Annotated[str | None, typer.Option(help="end instant (ISO 8601, exclusive)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the latency draws")] = 0,
    venue: Annotated[str, typer.Option(help="instrument rules of this venue")] = "kraken",
    workers: Annotated[int, typer.Option(min=1, help="worker processes")] = os.cpu_count() or 1,
    reports: Annotated[bool, typer.Option(help="an HTML report per run (matplotlib: about a second each)")] = True,
    resume: Annotated[
        str | None, typer.Option(help="a sweep id: run what it has not finished (done runs are never redone)")
    ] = None,
) -> None:
    """Fan a parameter grid out over worker processes; results go to PostgreSQL (AETHER_DATABASE_URL)."""
    try:
        database_url = load_settings(AetherSettings).database_url.get_secret_value()
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    engine = sa.create_engine(sync_url(database_url), poolclass=NullPool)
    try:
        if resume is not None:
            with engine.begin() as conn:
                if repository.get_sweep(conn, resume) is None:
                    raise BacktestInputError(f"--resume: no sweep {resume}")
                run_ids = repository.requeue_unfinished(conn, resume)
                total = len(repository.sweep_runs(conn, resume))
            sweep_id = resume
            console.print(f"sweep {sweep_id}: {total - len(run_ids)} of {total} runs done, running {len(run_ids)}")
        else:
            if strategy is None:
                raise BacktestInputError("give --strategy (or --resume SWEEP_ID)")
            first, last = _time("--start", start), _time("--end", end)
            spec = RunSpec(
                strategy=strategy,
                parameters=_pairs("--param", param),
                source=Source(tuple(from_file), tuple(bars_file)),
                start=first,
                end=last,
                seed=seed,
                settings=RunSettings(
                    venue=venue,
                    balances=_pairs("--balance", balance) or dict(DEFAULT_BALANCES),
                    bar_seconds=bar_seconds,
                    html_report=reports,
                ),
            )
            sweep_id, run_ids = _create_sweep(engine, spec, _grid(grid), data_dir)
            total = len(run_ids)
            console.print(f"sweep {sweep_id}: {total} runs (resume with --resume {sweep_id})")
    except (BacktestInputError, SourceError) as exc:
        raise _fail(str(exc)) from None
    finally:
        engine.dispose()
    typer.echo(sweep_id)
    outcomes: dict[str, int] = {}
    columns = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with (
        worker_pool(min(workers, max(len(run_ids), 1)), fork_now=True) as pool,
        Progress(*columns, console=console, transient=True) as progress,
    ):
        task = progress.add_task("runs", total=len(run_ids))
        futures = [pool.submit(execute_run, run_id, database_url, str(data_dir)) for run_id in run_ids]
        for future in as_completed(futures):
            outcome = future.result()
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
            progress.advance(task)
    console.print(f"sweep {sweep_id}: " + ", ".join(f"{n} {status}" for status, n in sorted(outcomes.items())))
    if outcomes.get(repository.FAILED):
        raise typer.Exit(1)
