"""`aether backtest run`: one strategy over recorded files or a range of the market data store, optionally under a
stress scenario and with mandatory exit brackets, with a progress bar; writes result.json and report.html.

It lives in `aether/` because it reads recorded market data with `data.replay.source` (the one definition of that
file format) and `data.replay.store_reader` (the store), which the pure engine in `shared/backtest` may not import.
"""

from __future__ import annotations

import asyncio
import getpass
import os
from collections.abc import Sequence
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
from data.replay.store_reader import CANDLE_WIDTHS, StoreRange, StoreUnreachable, read_store
from services.backtest import repository
from services.backtest.config import BacktestSettings
from services.backtest.service import new_id
from services.backtest.spec import (
    DEFAULT_BALANCES,
    RunSettings,
    RunSpec,
    Source,
    check_grid,
    check_spec,
    expected_events,
    load_streams,
)
from services.backtest.worker import execute_run, worker_pool
from shared.backtest.bars import BacktestInputError, Bar, read_bars
from shared.backtest.engine import BacktestConfig, BacktestEngine, Latency
from shared.backtest.results import metrics, write_reports
from shared.backtest.scenarios import SCENARIOS, Stressed, parse_scenario
from shared.backtest.strategies import make_strategy
from shared.backtest.stress import html_section, stress_report
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.db.engine import sync_url
from shared.domain.bracket_model import ExitPolicy
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


Streams = list[list[MarketData] | list[Bar]]


async def _from_store(rng: StoreRange, candles: str | None) -> Streams:
    try:
        settings = load_settings(AetherSettings)
    except ConfigurationError as exc:
        raise BacktestInputError(f"--from-store: {exc}") from None
    try:
        return list(await read_store(settings, rng, candles, application_name="aether-backtest"))
    except StoreUnreachable as exc:
        raise BacktestInputError(f"--from-store: {exc}") from None


def _from_files(
    from_file: list[Path], bars_file: list[Path], interval: timedelta, first: datetime | None, last: datetime | None
) -> Streams:
    streams: Streams = []
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
    return streams


def _exit_policy(text: str | None) -> ExitPolicy | None:
    if text is None:
        return None
    values = {name: Decimal(value) for name, value in _pairs("--exits", [p for p in text.split(",") if p]).items()}
    known = {"stop_loss_pct", "take_profit_pct", "trailing_distance_pct", "trailing_activation_pct"}
    for name, value in values.items():
        if name not in known:
            raise BacktestInputError(f"--exits: unknown level {name!r} (known: {', '.join(sorted(known))})")
        if not value.is_finite() or not 0 < value < 100:
            raise BacktestInputError(f"--exits: {name}={value} must be a percentage in (0, 100)")
    if not values:
        return ExitPolicy()  # the account policy's defaults
    return ExitPolicy(
        stop_loss_pct=values.get("stop_loss_pct"),
        take_profit_pct=values.get("take_profit_pct"),
        trailing_distance_pct=values.get("trailing_distance_pct"),
        trailing_activation_pct=values.get("trailing_activation_pct"),
    )


@app.command("scenarios")
def scenarios() -> None:
    """List the stress scenarios with their parameters (default and range)."""
    for scenario in SCENARIOS.values():
        params = ", ".join(f"{name}={p.default} [{p.minimum}, {p.maximum}]" for name, p in scenario.params.items())
        typer.echo(f"{scenario.name}: {scenario.description}\n    {params}")


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
    venue: Annotated[str, typer.Option(help="instrument rules of this venue (and the stored venue)")] = "kraken",
    from_store: Annotated[
        bool, typer.Option(help="read --symbol over --start/--end from the market data store")
    ] = False,
    symbol: Annotated[list[str], typer.Option(help="symbol to read from the store, repeatable")] = [],  # noqa: B006
    candles: Annotated[str | None, typer.Option(help="with --from-store: replay stored candles (1m, 1h, 1d)")] = None,
    scenario: Annotated[
        str | None, typer.Option(help="stress scenario NAME[:param=value,...] (flash_crash, feed_outage, ...)")
    ] = None,
    exits: Annotated[
        str | None,
        typer.Option(
            help="mandatory exit brackets, percent of entry: stop_loss_pct=2,take_profit_pct=4,... ('' = policy)"
        ),
    ] = None,
) -> None:
    """Run one strategy over files or a stored range and write its results."""
    try:
        chosen = make_strategy(strategy, _pairs("--param", param))
        first, last = _time("--start", start), _time("--end", end)
        if first is not None and last is not None and last <= first:
            raise BacktestInputError(f"--end {end} is not after --start {start}")
        stress = parse_scenario(scenario) if scenario is not None else None
        policy = _exit_policy(exits)
        if not from_file and not bars_file and not from_store:
            raise BacktestInputError("give at least one --from-file or --bars-file, or --from-store")
        if from_store and (from_file or bars_file):
            raise BacktestInputError("--from-store reads the store: do not also give --from-file or --bars-file")
        if candles is not None and not from_store:
            raise BacktestInputError("--candles needs --from-store (files of candles are --bars-file)")
        interval = CANDLE_WIDTHS[candles] if candles in CANDLE_WIDTHS else timedelta(seconds=bar_seconds)
        balances = {k: Decimal(v) for k, v in (_pairs("--balance", balance) or {"USD": "100000"}).items()}
        if from_store:
            if first is None or last is None:
                raise BacktestInputError("--from-store needs --start and --end")
            rng = StoreRange(venue, tuple(symbol), first, last, timedelta(seconds=max_gap_s))
            streams = asyncio.run(_from_store(rng, candles))
        else:
            streams = _from_files(from_file, bars_file, interval, first, last)
        config = BacktestConfig(
            specs=venue_precision(venue).specs(),
            initial_balances=balances,
            seed=seed,
            latency=Latency(timedelta(milliseconds=latency_ms), timedelta(milliseconds=jitter_ms)),
            bar_interval=interval if from_file or (from_store and candles is None) else None,
            max_gap=timedelta(seconds=max_gap_s),
            exits=policy,
        )
        stressed: Stressed | None = None
        replay: Sequence[Sequence[MarketData] | Sequence[Bar]] = streams
        if stress is not None:
            stressed = stress[0].apply(streams, config.specs, stress[1])
            replay = stressed.streams
        engine = BacktestEngine(config, chosen)
        total = expected_events(replay)
        columns = (TextColumn("backtest"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("events", total=total)
            result = engine.run(
                replay,
                bar_interval=interval,
                progress=lambda done: progress.update(task, completed=done),
                controls=() if stressed is None else stressed.controls,
                declared_gaps=() if stressed is None else stressed.declared_gaps,
            )
            progress.update(task, completed=total)
    except (BacktestInputError, SourceError, InvalidOperation) as exc:
        raise _fail(str(exc) or type(exc).__name__) from None
    report = stress_report(result, stressed) if stressed is not None or policy is not None else None
    json_path, html_path = write_reports(
        result, out, stress=report, stress_html="" if report is None else html_section(report)
    )
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


@app.command("parity")
def parity(
    strategy: Annotated[str, typer.Option(help="ema_cross or market_maker (any registered strategy)")],
    data: Annotated[Path, typer.Option(help="recorded market data (replay CSV/Parquet)")],
    seed: Annotated[int, typer.Option(help="seed of the run (the backtester's draws)")] = 0,
    param: Annotated[list[str], typer.Option(help="strategy parameter NAME=VALUE, repeatable")] = [],  # noqa: B006
    balance: Annotated[list[str], typer.Option(help="initial balance ASSET=AMOUNT, repeatable")] = [],  # noqa: B006
    bar_seconds: Annotated[int, typer.Option(min=1, help="length of the bars built from prints")] = 60,
    limit: Annotated[int, typer.Option(min=1, help="replay at most this many events")] = 1_000_000,
    token_env: Annotated[
        str, typer.Option(help="environment variable holding a service token with orders:write")
    ] = "AETHER_STRATEGY_TOKEN",  # noqa: S107  # the name of a variable, not a secret
) -> None:
    """The recorded stream through the OMS and paper venue (lockstep, over Kafka) and the backtester: the fill diff.

    Exit 0 when every fill is identical, 1 on any difference, 2 on bad input.
    """
    import asyncio
    import os
    import uuid

    from aether.parity import ParityError, run_parity
    from aether.strategy_worker import WorkerError
    from services.oms.config import OmsSettings
    from shared.config import ConfigurationError, load_settings

    try:
        make_strategy(strategy, _pairs("--param", param))
        messages = load_file(data)[:limit]
        if not messages:
            raise BacktestInputError(f"{data}: no market data")
        balances = {k: Decimal(v) for k, v in (_pairs("--balance", balance) or {"USD": "1000000"}).items()}
        token = os.environ.get(token_env)
        if not token:
            raise BacktestInputError(f"{token_env} is not set: a service token with orders:write is needed")
        run = uuid.uuid4().hex[:10]
        # Topics of its own: no other market data reaches the venue between two lockstep steps.
        settings = load_settings(
            OmsSettings,
            marketdata_book_topic=f"parity.{run}.book-events.v1",
            marketdata_trade_topic=f"parity.{run}.trade-events.v1",
        )
    except (BacktestInputError, SourceError, InvalidOperation, ConfigurationError) as exc:
        raise _fail(str(exc) or type(exc).__name__) from None

    async def bearer() -> str:
        return token

    try:
        report = asyncio.run(
            run_parity(
                strategy,
                _pairs("--param", param),
                messages,
                settings=settings,
                token=bearer,
                balances=balances,
                seed=seed,
                bar_interval=timedelta(seconds=bar_seconds),
            )
        )
    except (ParityError, WorkerError) as exc:
        raise _fail(str(exc)) from None
    for line in report.differences:
        typer.echo(line)
    phases = ", ".join(f"{name} {seconds:.1f}s" for name, seconds in report.timings.items())
    console.print(
        f"{report.events} events, fills: backtest {len(report.backtest)}, live {len(report.live)}, "
        f"{len(report.differences)} differing; {report.seconds:.1f}s ({phases})",
        highlight=False,
    )
    raise typer.Exit(1 if report.differences else 0)
