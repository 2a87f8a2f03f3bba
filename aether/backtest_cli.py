"""`aether backtest run`: one strategy over recorded files, with a progress bar; writes result.json and report.html.

It lives in `aether/` because it reads recorded market data with `data.replay.source` (the one definition of that
file format), which the pure engine in `shared/backtest` may not import.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from data.replay.source import SourceError, load_file
from shared.backtest.bars import BacktestInputError, Bar, read_bars
from shared.backtest.engine import BacktestConfig, BacktestEngine, Latency
from shared.backtest.results import metrics, write_reports
from shared.backtest.strategies import make_strategy
from shared.marketdata import MarketData
from shared.venues.instruments import venue_precision

console = Console(stderr=True)
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
