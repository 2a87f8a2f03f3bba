"""`aether strategy run`: one of the backtester's strategies live on an account, through `oms.commands.v1`."""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

import typer
from rich.console import Console

from aether.strategy_worker import CommandSender, StrategyWorker, run_live
from services.oms.config import OmsSettings
from shared.auth.service_tokens import ServiceTokenSource
from shared.backtest.bars import BacktestInputError
from shared.backtest.strategies import make_strategy
from shared.config import ConfigurationError, load_settings
from shared.events.producer import EventProducer

console = Console(stderr=True)
app = typer.Typer(help="Strategies live on the platform (the backtester's classes)", no_args_is_help=True)


@app.callback()
def main() -> None:
    """Strategies live on the platform (the backtester's classes)."""


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(2)


@app.command("run")
def run(
    name: Annotated[str, typer.Argument(help="ema_cross, market_maker or signal_follower")],
    account: Annotated[str, typer.Option(help="the trading account the orders are for")],
    param: Annotated[list[str], typer.Option(help="strategy parameter NAME=VALUE, repeatable")] = [],  # noqa: B006
    balance: Annotated[
        list[str], typer.Option(help="the account's balance ASSET=AMOUNT at start (positions count from it)")
    ] = [],  # noqa: B006
    bar_seconds: Annotated[int, typer.Option(min=1, help="length of the bars built from prints")] = 60,
) -> None:
    """Run until interrupted: market data and the account's order events in, commands to the OMS out."""
    try:
        params: dict[str, str] = {}
        for value in param:
            key, sep, text = value.partition("=")
            if not sep or not key:
                raise BacktestInputError(f"--param: expected NAME=VALUE, got {value!r}")
            params[key] = text
        strategy = make_strategy(name, params)
        balances: dict[str, Decimal] = {}
        for value in balance:
            asset, sep, text = value.partition("=")
            if not sep or not asset:
                raise BacktestInputError(f"--balance: expected ASSET=AMOUNT, got {value!r}")
            balances[asset] = Decimal(text)
        settings = load_settings(OmsSettings)
        tokens = ServiceTokenSource.from_settings(settings)
        if tokens is None:
            raise ConfigurationError("the worker needs a service identity (AETHER_SERVICE_CLIENT_ID and _SECRET)")
    except (BacktestInputError, ConfigurationError, ArithmeticError) as exc:
        raise _fail(str(exc)) from None
    worker = StrategyWorker(
        strategy,
        account_id=account,
        specs={str(symbol): spec for symbol, spec in settings.instrument_specs().items()},
        balances=balances,
        prefix=f"{uuid.uuid4().hex[:8]}.",  # a run's client order ids never collide with an earlier run's
        bar_interval=timedelta(seconds=bar_seconds),
    )
    worker.start(datetime.now(UTC))

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        producer = EventProducer(settings.kafka_bootstrap, client_id=f"strategy-{os.getpid()}")
        await producer.start()
        try:
            await run_live(
                worker,
                CommandSender(producer, tokens.token, account),
                bootstrap=settings.kafka_bootstrap,
                market_topics=(settings.marketdata_book_topic, settings.marketdata_trade_topic),
                stop=stop,
            )
        finally:
            await producer.stop()

    asyncio.run(main())
    console.print(f"{strategy.name}: {len(worker.fills)} fills", highlight=False)
