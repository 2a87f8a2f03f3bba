"""`aether data`: the market-data store's commands (sink, refresh-aggregates, check) and the backfills
(`backfill coingecko|kraken`, `sentiment`, from data/ingest/cli.py).

Mounted by aether/cli.py; runnable on its own as `python -m data.cli`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from datetime import datetime, timedelta
from typing import Annotated

import typer
from rich.console import Console

from data.ingest import store
from data.ingest.cli import backfill_app, sentiment_command
from data.ingest.quality import check_trades
from data.ingest.sink import SINK_CONSUMER, MarketDataSink
from shared.app_factory import supervise
from shared.clock import utc_now
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.db import create_engine, sessionmaker_for
from shared.db.marketdata import CANDLE_VIEWS
from shared.db.uow import UnitOfWork
from shared.observability.logging import configure_logging

console = Console(stderr=True)
# RFC 3339 with its offset (`Z` or `+00:00`): a time without one is refused, never read as local time.
TIME_FORMATS = ["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"]
app = typer.Typer(help="Market-data store: sink, aggregates, data quality, backfills", no_args_is_help=True)
app.add_typer(backfill_app, name="backfill")
app.command("sentiment")(sentiment_command)


def _settings() -> AetherSettings:
    try:
        return load_settings(AetherSettings)
    except ConfigurationError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None


def _utc(value: datetime | None, name: str) -> datetime | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise typer.BadParameter("give a UTC offset, e.g. 2026-01-31T00:00:00+00:00", param_hint=name)
    return value


@app.command("sink")
def sink_command(
    batch_size: Annotated[int, typer.Option(min=1, max=50_000, help="records per transaction at most")] = 1_000,
    snapshot_interval_s: Annotated[
        float, typer.Option(min=0.001, help="store the maintained book this often (feed time, seconds)")
    ] = 60.0,
    depth: Annotated[int, typer.Option(min=1, max=1_000, help="levels per side in a stored snapshot")] = 10,
    group_id: Annotated[str, typer.Option(help="Kafka consumer group (and inbox consumer name)")] = SINK_CONSUMER,
) -> None:
    """Store the marketdata.* topics in PostgreSQL until Ctrl-C or SIGTERM (trades, snapshots, quarantine)."""
    settings = _settings()
    configure_logging("marketdata-sink", settings.log_level)
    asyncio.run(_sink(settings, batch_size, snapshot_interval_s, depth, group_id))


async def _sink(settings: AetherSettings, batch_size: int, interval_s: float, depth: int, group_id: str) -> None:
    engine = create_engine(settings, application_name="aether-marketdata-sink")
    stop_event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop_event.set)
    sink = MarketDataSink(
        bootstrap=settings.kafka_bootstrap,
        security_protocol=settings.kafka_security_protocol,
        sessionmaker=sessionmaker_for(engine),
        group_id=group_id,
        batch_size=batch_size,
        snapshot_interval_s=interval_s,
        depth=depth,
    )

    async def work() -> None:
        await sink.start()
        try:
            await sink.run(stop_event)
        finally:
            await sink.stop()

    try:
        await supervise("marketdata-sink", work, stop_event)
    finally:
        await engine.dispose()
    console.print(f"sink stopped: {sink.stats}", highlight=False)


@app.command("refresh-aggregates")
def refresh_command(
    interval: Annotated[list[str] | None, typer.Option(help="1m, 1h or 1d; repeat for several (default: all)")] = None,
    every_s: Annotated[
        float, typer.Option(min=0, help="refresh again this often until Ctrl-C or SIGTERM (0: once)")
    ] = 0.0,
) -> None:
    """Refresh the candle views: incremental on TimescaleDB, REFRESH MATERIALIZED VIEW CONCURRENTLY otherwise."""
    unknown = sorted(set(interval or ()) - set(CANDLE_VIEWS))
    if unknown:
        raise typer.BadParameter(f"unknown {unknown}; one of {sorted(CANDLE_VIEWS)}", param_hint="--interval")
    settings = _settings()
    asyncio.run(_refresh(settings, interval, every_s))


async def _refresh(settings: AetherSettings, intervals: list[str] | None, every_s: float) -> None:
    engine = create_engine(settings, application_name="aether-refresh-aggregates")
    stop_event = asyncio.Event()
    if every_s:
        for sig in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(sig, stop_event.set)
    try:
        while True:
            for done in await store.refresh_aggregates(engine, intervals):
                how = (
                    "incremental (continuous aggregate)"
                    if done.incremental
                    else "full, concurrently (materialized view)"
                )
                console.print(f"refreshed marketdata.{done.view}: {how} in {done.elapsed_s:.3f} s", highlight=False)
            if not every_s:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop_event.wait(), timeout=every_s)
            if stop_event.is_set():
                return
    finally:
        await engine.dispose()


@app.command("prune-inbox")
def prune_inbox_command(
    older_than_days: Annotated[
        float, typer.Option(min=1, help="forget inbox rows older than this; keep it beyond the topics' retention")
    ] = 14.0,
) -> None:
    """Delete the sink's inbox rows older than the topics could redeliver (the inbox grows by one row per message)."""
    settings = _settings()

    async def run() -> int:
        engine = create_engine(settings, application_name="aether-prune-inbox")
        try:
            async with UnitOfWork(sessionmaker_for(engine)) as uow:
                return await store.prune_inbox(uow.session, utc_now() - timedelta(days=older_than_days))
        finally:
            await engine.dispose()

    console.print(f"deleted {asyncio.run(run())} marketdata.inbox rows older than {older_than_days:g} days")


@app.command("check")
def check_command(
    venue: Annotated[str | None, typer.Option(help="only this venue")] = None,
    symbol: Annotated[str | None, typer.Option(help="only this instrument, e.g. BTC/USD")] = None,
    start: Annotated[
        datetime | None, typer.Option("--from", formats=TIME_FORMATS, help="from this time, e.g. 2026-01-31T00:00:00Z")
    ] = None,
    end: Annotated[
        datetime | None, typer.Option("--to", formats=TIME_FORMATS, help="up to this time, excluded")
    ] = None,
    max_gap_s: Annotated[float, typer.Option(min=0.001, help="report trades further apart than this")] = 300.0,
    quarantine: Annotated[bool, typer.Option(help="move duplicate rows to marketdata.quarantine")] = True,
) -> None:
    """Find gaps, out-of-order and duplicate trades; print a JSON report; exit 1 when anything was found."""
    scope = store.Scope(venue, symbol, _utc(start, "--from"), _utc(end, "--to"))
    if scope.start and scope.end and scope.start > scope.end:
        raise typer.BadParameter("--from is after --to", param_hint="--from")
    settings = _settings()

    async def run() -> dict[str, object]:
        engine = create_engine(settings, application_name="aether-data-check")
        try:
            report = await check_trades(
                sessionmaker_for(engine),
                scope,
                max_gap=timedelta(seconds=max_gap_s),
                quarantine_duplicates=quarantine,
            )
        finally:
            await engine.dispose()
        return report.as_dict()

    result = asyncio.run(run())
    typer.echo(json.dumps(result, sort_keys=True))
    if not result["clean"]:
        raise typer.Exit(1)


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        app()
