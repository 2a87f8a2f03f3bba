"""`aether data backfill coingecko|kraken`: history into the `marketdata` schema, resumable, with a progress bar;
`aether data sentiment`: hourly cashtag sentiment from X API v2.

Also runnable on its own: `python -m data.ingest.cli backfill kraken --symbol BTC/USD --from 2026-11-01`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

import httpx
import sqlalchemy.exc
import typer
from pydantic import SecretStr
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from sqlalchemy.ext.asyncio import AsyncEngine

from data.ingest import coingecko, kraken_trades, x_sentiment
from data.ingest.http import (
    BackfillInputError,
    PayloadError,
    RateLimitedGetter,
    SourceRefused,
    TemporaryFailure,
    TokenBucket,
)
from data.ingest.progress import BackfillReport, ProgressFn
from shared.config import AetherSettings, ConfigurationError, load_settings
from shared.db import create_engine

console = Console(stderr=True)
app = typer.Typer(help="Market-data history: backfills", no_args_is_help=True, pretty_exceptions_enable=False)
backfill_app = typer.Typer(help="Backfill history from CoinGecko or Kraken", no_args_is_help=True)
app.add_typer(backfill_app, name="backfill")
HTTP_TIMEOUT_S = 30.0
USER_AGENT = "aether-backfill/0.1"


def _fail(message: str, code: int = 2) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True, markup=True)
    return typer.Exit(code)


def parse_time(value: str, option: str) -> datetime:
    """ISO 8601 date or time; without a zone it is UTC."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BackfillInputError(option, f"{value!r} is not an ISO 8601 date or time") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _summary(report: BackfillReport) -> str:
    state = "complete" if report.completed else "incomplete"
    resumed = ", resumed from its checkpoint" if report.resumed else ""
    return (
        f"{report.source} {report.subject}: {state}{resumed}; {report.pages} pages, {report.new_rows:,} new rows, "
        f"{len(report.gaps)} gaps"
    )


async def _run(
    base_url: str,
    rate_per_s: float,
    classify: Callable[[httpx.Response], Any],
    work: Callable[[AsyncEngine, RateLimitedGetter, ProgressFn], Awaitable[BackfillReport]],
    headers: dict[str, str],
) -> BackfillReport:
    try:
        settings = load_settings(AetherSettings)
    except ConfigurationError as exc:
        raise _fail(str(exc)) from None
    engine = create_engine(settings, application_name="aether-backfill")
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>5.1f}%"))
    try:
        async with httpx.AsyncClient(
            base_url=base_url, timeout=HTTP_TIMEOUT_S, headers={"User-Agent": USER_AGENT, **headers}
        ) as client:
            getter = RateLimitedGetter(client, TokenBucket(rate_per_s), classify)
            with Progress(*columns, TimeElapsedColumn(), TimeRemainingColumn(), console=console) as bar:
                task = bar.add_task("backfill", total=1.0)

                def progress(reached: datetime, start: datetime, end: datetime) -> None:
                    span = (end - start).total_seconds()
                    bar.update(task, completed=(reached - start).total_seconds() / span if span > 0 else 1.0)

                return await work(engine, getter, progress)
    finally:
        await engine.dispose()


def _execute(
    base_url: str,
    rate_per_s: float,
    classify: Callable[[httpx.Response], Any],
    work: Callable[[AsyncEngine, RateLimitedGetter, ProgressFn], Awaitable[BackfillReport]],
    refused_field: str,
    headers: dict[str, str] | None = None,
) -> None:
    try:
        report = asyncio.run(_run(base_url, rate_per_s, classify, work, headers or {}))
    except BackfillInputError as exc:
        raise _fail(_option_message(exc)) from None
    except SourceRefused as exc:
        field = f"--{refused_field}: " if exc.status_code == 404 or "Unknown asset pair" in str(exc) else ""
        raise _fail(f"{field}{exc}") from None
    except PayloadError as exc:
        raise _fail(f"{exc}; nothing of that page was stored", code=1) from None
    except (TemporaryFailure, httpx.HTTPError) as exc:
        raise _fail(f"gave up after retries: {exc}; run the same command again to resume", code=1) from None
    except (sqlalchemy.exc.OperationalError, OSError) as exc:
        raise _fail(f"database unreachable: {exc.__class__.__name__}", code=1) from None
    console.print(_summary(report), highlight=False)
    for gap in report.gaps:
        console.print(f"  gap: no data after {gap.after.isoformat()} until {gap.before.isoformat()}", highlight=False)


@backfill_app.command("coingecko")
def backfill_coingecko_command(
    coin: Annotated[str, typer.Option(help="CoinGecko coin id, e.g. bitcoin")],
    vs: Annotated[str, typer.Option(help="quote currency, e.g. usd")] = "usd",
    start: Annotated[str, typer.Option("--from", help="ISO 8601 start (UTC unless a zone is given)")] = "",
    end: Annotated[str, typer.Option("--to", help="ISO 8601 end (UTC unless a zone is given)")] = "",
    window_days: Annotated[
        float, typer.Option(help="days per request: up to 90 gives hourly points, more gives daily")
    ] = coingecko.DEFAULT_WINDOW.days,
    base_url: Annotated[str, typer.Option(envvar="AETHER_COINGECKO_URL", help="API root")] = coingecko.DEFAULT_BASE_URL,
    calls_per_min: Annotated[
        float, typer.Option(min=0.1, help="request rate (the keyless tier allows about 30 a minute)")
    ] = coingecko.FREE_TIER_CALLS_PER_MIN,
) -> None:
    """Backfill prices, market caps and volumes of a coin from CoinGecko's market_chart/range."""
    try:
        request = coingecko.validate_request(
            coin,
            vs,
            parse_time(start, "--from") if start else _missing("--from"),
            parse_time(end, "--to") if end else _missing("--to"),
            timedelta(days=window_days),
        )
    except BackfillInputError as exc:
        raise _fail(_option_message(exc)) from None

    async def work(engine: AsyncEngine, getter: RateLimitedGetter, progress: ProgressFn) -> BackfillReport:
        return await coingecko.backfill_coingecko(engine, getter, request, progress)

    _execute(base_url, calls_per_min / 60, coingecko.classify, work, "coin")


@backfill_app.command("kraken")
def backfill_kraken_command(
    symbol: Annotated[str, typer.Option(help="platform symbol, e.g. BTC/USD")],
    start: Annotated[str, typer.Option("--from", help="ISO 8601 start (UTC unless a zone is given)")] = "",
    end: Annotated[str | None, typer.Option("--to", help="ISO 8601 end; default: up to now")] = None,
    base_url: Annotated[
        str, typer.Option(envvar="AETHER_KRAKEN_REST_URL", help="API root")
    ] = kraken_trades.DEFAULT_BASE_URL,
    calls_per_s: Annotated[
        float, typer.Option(min=0.01, help="request rate (public endpoints: about one a second)")
    ] = kraken_trades.PUBLIC_CALLS_PER_S,
) -> None:
    """Backfill public trades of a symbol from Kraken's Trades endpoint, following its `since` cursor."""
    try:
        request = kraken_trades.validate_request(
            symbol,
            parse_time(start, "--from") if start else _missing("--from"),
            parse_time(end, "--to") if end else None,
        )
    except BackfillInputError as exc:
        raise _fail(_option_message(exc)) from None

    async def work(engine: AsyncEngine, getter: RateLimitedGetter, progress: ProgressFn) -> BackfillReport:
        return await kraken_trades.backfill_kraken(engine, getter, request, progress)

    _execute(base_url, calls_per_s, kraken_trades.classify, work, "symbol")


@app.command("sentiment")
def sentiment_command(
    cashtag: Annotated[list[str], typer.Option(help="cashtag, e.g. BTC (repeat for several)")],
    start: Annotated[str, typer.Option("--from", help="ISO 8601 start, within the last 7 days")] = "",
    end: Annotated[str, typer.Option("--to", help="ISO 8601 end")] = "",
    base_url: Annotated[str, typer.Option(envvar="AETHER_X_API_URL", help="API root")] = x_sentiment.DEFAULT_BASE_URL,
    calls_per_s: Annotated[float, typer.Option(min=0.01, help="request rate")] = 1.0,
) -> None:
    """Hourly sentiment features of cashtags from X API v2 post counts and recent posts, scored with VADER."""
    bearer = SecretStr(os.environ.get("AETHER_X_BEARER_TOKEN", ""))
    try:
        if not bearer.get_secret_value():
            raise BackfillInputError("AETHER_X_BEARER_TOKEN", "is not set (an X API app-only bearer token)")
        tags = [x_sentiment.validate_cashtag(tag) for tag in cashtag]
        window = (
            parse_time(start, "--from") if start else _missing("--from"),
            parse_time(end, "--to") if end else _missing("--to"),
        )
    except BackfillInputError as exc:
        raise _fail(_option_message(exc)) from None

    async def work(engine: AsyncEngine, getter: RateLimitedGetter, progress: ProgressFn) -> BackfillReport:
        report = BackfillReport(x_sentiment.SOURCE, ",".join(tags))
        for tag in tags:
            rows = await x_sentiment.ingest_sentiment(engine, getter, tag, *window)
            report.pages += 1
            report.new_rows += len(rows)
            progress(window[1], *window)
        report.completed = True
        return report

    headers = {"Authorization": f"Bearer {bearer.get_secret_value()}"}
    _execute(base_url, calls_per_s, x_sentiment.classifier(), work, "cashtag", headers=headers)


def _missing(option: str) -> datetime:
    raise BackfillInputError(option, "is required")


def _option_message(exc: BackfillInputError) -> str:
    name = exc.field_name
    if not name.startswith("--") and not name.isupper():  # options get their dashes; environment variables not
        name = f"--{name}"
    return f"{name}: {str(exc).split(': ', 1)[1]}"


if __name__ == "__main__":
    app()
