"""`aether feed replay`: market data onto the `marketdata.*` topics, from a file or a SYNTHETIC market;
`aether feed kraken`: the same topics and messages from Kraken's live public WebSocket v2 feed;
`aether feed coinbase`: the same from Coinbase Advanced Trade's `level2` and `market_trades` channels.

Also runnable on its own: `python -m data.replay.cli replay --synthetic --speed 1`.
"""

from __future__ import annotations

import asyncio
import re
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from data.replay.live import LiveReport, run_binance, run_coinbase, run_kraken
from data.replay.publisher import ReplayReport, ReplayTopics, replay
from data.replay.source import (
    CROSS_ASSET_MARKETS,
    FileSource,
    MarketDataSource,
    SourceError,
    SyntheticMarket,
    cross_asset_market,
)
from shared.clock import utc_now
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.domain.money import MoneyError, to_decimal
from shared.events.producer import BROKER_UNAVAILABLE_ERRORS, EventProducer
from shared.events.retry import RetryStopped, attempts_until_stopped
from shared.venues.binance import ws_public as binance_ws
from shared.venues.binance.adapter import BINANCE_URL
from shared.venues.coinbase import ws_public as coinbase_ws
from shared.venues.kraken.book import DEPTHS
from shared.venues.kraken.ws_public import PUBLIC_URL, FeedOptions, FeedStats

console = Console(stderr=True)
app = typer.Typer(
    help="Market data for paper trading: replay a file or a SYNTHETIC market, or a live venue feed, onto the "
    "marketdata.* topics",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
LOG_EVERY_S = 60.0  # progress line interval when stderr is not a terminal (e.g. under `aether up`)
CONNECT_BACKOFF_S = 0.5
MAX_CONNECT_BACKOFF_S = 10.0


class CommandError(Exception):
    """A problem worth one line on stderr and a non-zero exit."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class _Plan:
    source: MarketDataSource
    label: str
    total: int | None
    start_at: datetime | None


@app.callback()
def feed() -> None:
    """Market data for paper trading: replayed, synthetic, or live from a venue."""


@app.command("replay")
def replay_command(
    file: Annotated[
        Path | None,
        typer.Option(help="CSV (or Parquet, with pyarrow) of trades and book levels; format in data/replay/source.py"),
    ] = None,
    synthetic: Annotated[bool, typer.Option(help="a seeded SYNTHETIC market (random walk), not real data")] = False,
    cross_asset: Annotated[
        bool, typer.Option(help="synthetic: BTC/USD, ETH/USD and USDT/USD together (--symbol/--start-price unused)")
    ] = False,
    seed: Annotated[int, typer.Option(help="synthetic: seed (same seed, same messages)")] = 7,
    symbol: Annotated[str, typer.Option(help="synthetic: symbol")] = "BTC/USD",
    start_price: Annotated[str, typer.Option(help="synthetic: first mid price")] = "60000",
    volatility: Annotated[float, typer.Option(help="synthetic: std. dev. of the log mid per second")] = 0.0003,
    speed: Annotated[
        float, typer.Option(min=0, help="1 = real time, 2 = twice as fast, 0 = as fast as possible")
    ] = 1.0,
    limit: Annotated[int | None, typer.Option(min=0, help="stop after this many messages")] = None,
    loop: Annotated[bool, typer.Option(help="file: start again at the end, later in time")] = False,
    keep_timestamps: Annotated[
        bool, typer.Option(help="file: keep the file's times (default: move the first message to now)")
    ] = False,
    venue: Annotated[str, typer.Option(help="file: the venue name written into the messages")] = "replay",
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: AETHER_KAFKA_BOOTSTRAP)")
    ] = None,
    topic_prefix: Annotated[str, typer.Option(help="prefix for both topic names (tests, experiments)")] = "",
) -> None:
    """Publish book snapshots/deltas and trades, paced by their timestamps; Ctrl-C or SIGTERM stops cleanly.

    A Kafka outage (at start or mid-stream) is waited out with backoff, logged once; the replay then resumes.
    """
    try:
        if (file is None) == (not synthetic):
            raise CommandError("give exactly one of --file PATH or --synthetic")
        if cross_asset and not synthetic:
            raise CommandError("--cross-asset goes with --synthetic")
        now = utc_now()
        if file is not None:
            plan = _file_plan(file, venue, loop=loop, start_at=None if keep_timestamps else now)
        elif cross_asset:
            symbols = ", ".join(symbol for symbol, *_ in CROSS_ASSET_MARKETS)
            plan = _Plan(
                cross_asset_market(seed, now), f"SYNTHETIC {symbols} markets (seed {seed}, not real data)", None, None
            )
        else:
            plan = _synthetic_plan(symbol, seed, start_price, volatility, start_at=now)
        servers, protocol = _kafka(bootstrap)
        topics = ReplayTopics.with_prefix(topic_prefix)
        console.print(
            f"replaying {plan.label} to {topics.book} and {topics.trade} at speed {speed:g}",
            highlight=False,
            soft_wrap=True,
        )
        report = asyncio.run(_run(plan, servers, protocol, topics, speed=speed, limit=limit, loop=loop))
    except CommandError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    state = "stopped" if report.stopped else "done"
    console.print(
        f"{state}: published {report.published} messages ({report.books} book, {report.trades} trade) "
        f"in {report.elapsed_s:.1f} s",
        highlight=False,
    )


_SYMBOL = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")
_Stats = TypeVar("_Stats")


@app.command("kraken")
def kraken_command(
    symbols: Annotated[str, typer.Option(help="comma-separated Kraken v2 symbols, e.g. BTC/USD,ETH/USD")],
    url: Annotated[str, typer.Option(help="the public WebSocket v2 endpoint (a protocol fake in tests)")] = PUBLIC_URL,
    depth: Annotated[int, typer.Option(help=f"book depth per side, one of {', '.join(map(str, DEPTHS))}")] = 10,
    idle_timeout: Annotated[float, typer.Option(min=0.1, help="seconds without a frame before reconnecting")] = 10.0,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: AETHER_KAFKA_BOOTSTRAP)")
    ] = None,
    topic_prefix: Annotated[str, typer.Option(help="prefix for both topic names (tests, experiments)")] = "",
) -> None:
    """Publish Kraken's live books (checksum-validated) and trades; Ctrl-C or SIGTERM stops cleanly."""
    try:
        wanted = [part.strip() for part in symbols.split(",") if part.strip()]
        bad = [symbol for symbol in wanted if not _SYMBOL.match(symbol) or len(symbol) > 32]
        if not wanted or bad:
            raise CommandError(f"--symbols: {', '.join(bad) or 'none given'}: expected symbols like BTC/USD,ETH/USD")
        if depth not in DEPTHS:
            raise CommandError(f"--depth: must be one of {', '.join(map(str, DEPTHS))}, not {depth}")
        if not url.startswith(("wss://", "ws://")):
            raise CommandError(f"--url: {url!r} is not a ws:// or wss:// URL")
        servers, protocol = _kafka(bootstrap)
        topics = ReplayTopics.with_prefix(topic_prefix)
        options = FeedOptions(url=url, depth=depth, idle_timeout_s=idle_timeout)
        console.print(
            f"streaming Kraken {', '.join(wanted)} (depth {depth}) from {url} to {topics.book} and {topics.trade}",
            highlight=False,
            soft_wrap=True,
        )
        report, stats = asyncio.run(_run_live(wanted, servers, protocol, topics, options))
    except CommandError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    console.print(
        f"stopped: published {report.published} messages ({report.books} book, {report.trades} trade); "
        f"connections {stats.connections}, faults {stats.faults or 'none'}",
        highlight=False,
    )


async def _run_live(
    symbols: list[str], bootstrap: str, protocol: str, topics: ReplayTopics, options: FeedOptions
) -> tuple[LiveReport, FeedStats]:
    async def start(producer: EventProducer, stop: asyncio.Event) -> tuple[LiveReport, FeedStats]:
        report, feed = await run_kraken(symbols, producer, topics, options, stop)
        return report, feed.stats

    return await _run_venue_feed("aether-feed-kraken", bootstrap, protocol, start, FeedStats())


async def _run_venue_feed(
    client_id: str,
    bootstrap: str,
    protocol: str,
    start: Callable[[EventProducer, asyncio.Event], Awaitable[tuple[LiveReport, _Stats]]],
    no_stats: _Stats,
) -> tuple[LiveReport, _Stats]:
    """Connect a producer, run a venue feed until SIGINT / SIGTERM, stop the producer."""
    stop = asyncio.Event()
    event_loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        event_loop.add_signal_handler(signum, stop.set)
    producer = EventProducer(bootstrap, client_id=client_id, security_protocol=protocol)
    try:
        if not await _connect(producer, bootstrap, stop):
            return LiveReport(), no_stats
        return await start(producer, stop)
    finally:
        await producer.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            event_loop.remove_signal_handler(signum)


@app.command("binance")
def binance_command(
    symbols: Annotated[str, typer.Option(help="comma-separated symbols, e.g. BTC/USDT,ETH/USDT")],
    url: Annotated[str, typer.Option(help="the WebSocket streams endpoint (a protocol fake in tests)")] = (
        binance_ws.STREAM_URL
    ),
    rest_url: Annotated[str, typer.Option(help="the REST endpoint of the depth snapshots")] = BINANCE_URL,
    depth: Annotated[int, typer.Option(min=1, max=1000, help="book levels per side published")] = 10,
    idle_timeout: Annotated[float, typer.Option(min=0.1, help="seconds without a frame before reconnecting")] = 10.0,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: AETHER_KAFKA_BOOTSTRAP)")
    ] = None,
    topic_prefix: Annotated[str, typer.Option(help="prefix for both topic names (tests, experiments)")] = "",
) -> None:
    """Publish Binance's live books (snapshot + diff stream, gaps resynced) and trades; Ctrl-C or SIGTERM stops."""
    try:
        wanted = [part.strip() for part in symbols.split(",") if part.strip()]
        bad = [symbol for symbol in wanted if not _SYMBOL.match(symbol) or len(symbol) > 32]
        if not wanted or bad:
            raise CommandError(f"--symbols: {', '.join(bad) or 'none given'}: expected symbols like BTC/USDT,ETH/USDT")
        if not url.startswith(("wss://", "ws://")):
            raise CommandError(f"--url: {url!r} is not a ws:// or wss:// URL")
        if not rest_url.startswith(("https://", "http://")):
            raise CommandError(f"--rest-url: {rest_url!r} is not an http:// or https:// URL")
        servers, protocol = _kafka(bootstrap)
        topics = ReplayTopics.with_prefix(topic_prefix)
        options = binance_ws.FeedOptions(url=url, rest_url=rest_url, depth=depth, idle_timeout_s=idle_timeout)

        async def start(producer: EventProducer, stop: asyncio.Event) -> tuple[LiveReport, binance_ws.FeedStats]:
            report, feed = await run_binance(wanted, producer, topics, options, stop)
            return report, feed.stats

        console.print(
            f"streaming Binance {', '.join(wanted)} from {url} to {topics.book} and {topics.trade}",
            highlight=False,
            soft_wrap=True,
        )
        report, stats = asyncio.run(
            _run_venue_feed("aether-feed-binance", servers, protocol, start, binance_ws.FeedStats())
        )
    except CommandError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    console.print(
        f"stopped: published {report.published} messages ({report.books} book, {report.trades} trade); "
        f"connections {stats.connections}, faults {stats.faults or 'none'}",
        highlight=False,
    )


@app.command("coinbase")
def coinbase_command(
    symbols: Annotated[str, typer.Option(help="comma-separated products, BTC-USD,ETH-USD (or BTC/USD,ETH/USD)")],
    url: Annotated[str, typer.Option(help="the Advanced Trade WebSocket (a protocol fake in tests)")] = (
        coinbase_ws.PUBLIC_URL
    ),
    depth: Annotated[int, typer.Option(min=1, max=1000, help="levels per side published")] = 10,
    idle_timeout: Annotated[float, typer.Option(min=0.1, help="seconds without a frame before reconnecting")] = 10.0,
    bootstrap: Annotated[
        str | None, typer.Option(help="Kafka bootstrap servers (default: AETHER_KAFKA_BOOTSTRAP)")
    ] = None,
    topic_prefix: Annotated[str, typer.Option(help="prefix for both topic names (tests, experiments)")] = "",
) -> None:
    """Publish Coinbase's live books (sequence-checked level2) and trades as BTC/USD...; Ctrl-C stops cleanly."""
    try:
        wanted = [part.strip().replace("-", "/") for part in symbols.split(",") if part.strip()]
        bad = [symbol for symbol in wanted if not _SYMBOL.match(symbol) or len(symbol) > 32]
        if not wanted or bad:
            raise CommandError(f"--symbols: {', '.join(bad) or 'none given'}: expected products like BTC-USD,ETH-USD")
        if not url.startswith(("wss://", "ws://")):
            raise CommandError(f"--url: {url!r} is not a ws:// or wss:// URL")
        servers, protocol = _kafka(bootstrap)
        topics = ReplayTopics.with_prefix(topic_prefix)
        options = coinbase_ws.FeedOptions(url=url, depth=depth, idle_timeout_s=idle_timeout)
        console.print(
            f"streaming Coinbase {', '.join(wanted)} (depth {depth}) from {url} to {topics.book} and {topics.trade}",
            highlight=False,
            soft_wrap=True,
        )

        async def start(producer: EventProducer, stop: asyncio.Event) -> tuple[LiveReport, coinbase_ws.FeedStats]:
            report, feed = await run_coinbase(wanted, producer, topics, options, stop)
            return report, feed.stats

        report, stats = asyncio.run(
            _run_venue_feed("aether-feed-coinbase", servers, protocol, start, coinbase_ws.FeedStats())
        )
    except CommandError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
    console.print(
        f"stopped: published {report.published} messages ({report.books} book, {report.trades} trade); "
        f"connections {stats.connections}, resyncs {stats.resyncs}, faults {stats.faults or 'none'}",
        highlight=False,
    )


def _file_plan(path: Path, venue: str, *, loop: bool, start_at: datetime | None) -> _Plan:
    try:
        source = FileSource(path, venue)
    except SourceError as exc:
        raise CommandError(str(exc)) from None
    if len(source) == 0:
        raise CommandError(f"{path}: no messages in the file")
    return _Plan(source, f"{path} ({len(source)} messages)", None if loop else len(source), start_at)


def _synthetic_plan(symbol: str, seed: int, start_price: str, volatility: float, *, start_at: datetime) -> _Plan:
    try:
        price = to_decimal(start_price)
    except MoneyError as exc:
        raise CommandError(f"--start-price: {exc}") from None
    try:
        market = SyntheticMarket(symbol=symbol, seed=seed, start_price=price, start_at=start_at, volatility=volatility)
        next(market.messages())  # fails here, not mid-run, on a symbol the schema refuses
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        raise CommandError(f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}") from None
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    return _Plan(market, f"a SYNTHETIC {symbol} market (seed {seed}, not real data)", None, None)


def _kafka(bootstrap: str | None) -> tuple[str, str]:
    if bootstrap is not None:
        return bootstrap, "PLAINTEXT"
    try:
        settings = load_settings(AetherSettings)
    except ConfigurationError as exc:
        raise CommandError(str(exc)) from None
    return settings.kafka_bootstrap, settings.kafka_security_protocol


async def _run(
    plan: _Plan, bootstrap: str, protocol: str, topics: ReplayTopics, *, speed: float, limit: int | None, loop: bool
) -> ReplayReport:
    stop = asyncio.Event()
    event_loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        event_loop.add_signal_handler(signum, stop.set)
    producer = EventProducer(bootstrap, client_id="aether-feed-replay", security_protocol=protocol)
    if not await _connect(producer, bootstrap, stop):
        return ReplayReport(stopped=True)
    total = limit if limit is not None and (plan.total is None or limit < plan.total) else plan.total
    try:
        with _ProgressDisplay(total) as on_progress:
            return await replay(
                plan.source,
                producer,
                speed=speed,
                limit=limit,
                loop=loop,
                topics=topics,
                start_at=plan.start_at,
                stop=stop,
                on_progress=on_progress,
            )
    finally:
        await producer.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            event_loop.remove_signal_handler(signum)


async def _connect(producer: EventProducer, bootstrap: str, stop: asyncio.Event) -> bool:
    """Start the producer, retrying with backoff while Kafka is unreachable; False when stopped first."""
    failures = 0
    try:
        async for attempt in attempts_until_stopped(
            stop, on=BROKER_UNAVAILABLE_ERRORS, initial_s=CONNECT_BACKOFF_S, max_s=MAX_CONNECT_BACKOFF_S
        ):
            with attempt:
                try:
                    await producer.start()
                except BROKER_UNAVAILABLE_ERRORS as exc:
                    failures += 1
                    if failures == 1:
                        console.print(
                            f"[yellow]cannot reach Kafka at {bootstrap}[/yellow] ({type(exc).__name__}: {exc}); "
                            "retrying until it answers (Ctrl-C stops)",
                            highlight=False,
                            soft_wrap=True,
                        )
                    raise
    except RetryStopped:
        return False
    if failures:
        console.print(f"connected to Kafka at {bootstrap} after {failures} failed attempts", highlight=False)
    return True


class _ProgressDisplay:
    """A rich progress display on a terminal; otherwise a plain line every LOG_EVERY_S seconds."""

    def __init__(self, total: int | None) -> None:
        self.total = total
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.logged_at = time.monotonic()

    def __enter__(self) -> Callable[[ReplayReport], None]:
        if console.is_terminal:
            self.bar = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed} msgs  {task.fields[detail]}"),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.bar.start()
            self.task = self.bar.add_task("replaying", total=self.total, detail="")
        return self.update

    def __exit__(self, *_: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def update(self, report: ReplayReport) -> None:
        detail = f"{report.books} book, {report.trades} trade, {report.rate_per_s:,.0f}/s, at {_at(report)}"
        if self.bar is not None and self.task is not None:
            self.bar.update(self.task, completed=report.published, detail=detail)
        elif time.monotonic() - self.logged_at >= LOG_EVERY_S:
            self.logged_at = time.monotonic()
            console.print(f"published {report.published} messages ({detail})", highlight=False)


def _at(report: ReplayReport) -> str:
    return report.last_at.strftime("%H:%M:%S") if report.last_at is not None else "-"


if __name__ == "__main__":
    app()
