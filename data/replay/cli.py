"""`aether feed replay`: market data onto the `marketdata.*` topics, from a CSV file or a synthetic market."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from data.replay.publisher import ReplayStats, replay
from data.replay.source import SourceError, SyntheticMarket, read_csv
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.events.producer import EventProducer
from shared.marketdata import MarketData

console = Console(stderr=True)
app = typer.Typer(help="Market-data replay onto the marketdata.* topics", no_args_is_help=True)


@app.callback()
def feed() -> None:
    """Market data for paper trading on a machine without exchange access."""


@app.command("replay")
def replay_command(
    file: Annotated[Path | None, typer.Option(help="CSV of trades and book levels (see data/replay/source.py)")] = None,
    synthetic: Annotated[bool, typer.Option(help="a seeded SYNTHETIC market instead of a file")] = False,
    seed: Annotated[int, typer.Option(help="seed of the synthetic market")] = 7,
    symbol: Annotated[str, typer.Option(help="symbol of the synthetic market")] = "BTC/USD",
    start_price: Annotated[str, typer.Option(help="first mid price of the synthetic market")] = "60000",
    speed: Annotated[float, typer.Option(min=0, help="1 = real time, 0 = as fast as possible")] = 1.0,
    limit: Annotated[int | None, typer.Option(min=1, help="stop after this many messages")] = None,
    loop: Annotated[bool, typer.Option(help="start the file again at its end")] = False,
    bootstrap: Annotated[str | None, typer.Option(help="Kafka bootstrap servers")] = None,
) -> None:
    """Publish book snapshots and trades; Ctrl-C stops cleanly."""
    if (file is None) == (not synthetic):
        console.print("[red]error:[/red] give exactly one of --file or --synthetic", soft_wrap=True)
        raise typer.Exit(2)
    try:
        settings = load_settings(AetherSettings)
    except ConfigurationError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    if file is not None and not file.is_file():
        console.print(f"[red]error:[/red] {file}: no such file", soft_wrap=True)
        raise typer.Exit(2)
    messages: Iterable[MarketData]
    if file is None:
        market = SyntheticMarket(symbol=symbol, seed=seed, start_price=Decimal(start_price), start_at=datetime.now(UTC))
        messages = market.messages()
        console.print(f"replaying a SYNTHETIC {symbol} market (seed {seed}), not real data")
    else:
        messages = itertools.chain.from_iterable(itertools.repeat(list(read_csv(file)))) if loop else read_csv(file)
    try:
        stats = asyncio.run(_publish(messages, bootstrap or settings.kafka_bootstrap, speed, limit))
    except SourceError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("stopped")
        return
    console.print(f"published {stats.published} messages ({stats.books} books, {stats.trades} trades)")


async def _publish(messages: Iterable[MarketData], bootstrap: str, speed: float, limit: int | None) -> ReplayStats:
    producer = EventProducer(bootstrap=bootstrap, client_id="aether-feed-replay")
    await producer.start()
    try:
        return await replay(
            messages,
            producer,
            speed=speed,
            limit=limit,
            on_progress=lambda s: (
                console.print(f"published {s.published}", highlight=False) if s.published % 1_000 == 0 else None
            ),
        )
    finally:
        await producer.stop()


if __name__ == "__main__":
    app()
