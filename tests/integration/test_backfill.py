"""CoinGecko and Kraken backfills against their protocol fakes (real HTTP on loopback) and real PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typer.testing import CliRunner

from data.ingest import coingecko, kraken_trades
from data.ingest.cli import app
from data.ingest.http import PayloadError, RateLimitedGetter, SourceRefused, TokenBucket
from tests.fakes.coingecko import CoinGeckoFake
from tests.fakes.kraken_public import KrakenTradesFake
from tests.fakes.loopback import serve_on_loopback
from tests.helpers import own_database

FAST_RATE_PER_S = 1_000.0
DAY_ONE = datetime(2026, 10, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def backfill_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "backfill") as url:
        yield url


@pytest.fixture
async def db(backfill_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(make_url(backfill_url))
    async with engine.begin() as connection:
        await connection.execute(
            text("TRUNCATE marketdata.trades, marketdata.coingecko_prices, marketdata.backfill_checkpoints")
        )
    yield engine
    await engine.dispose()


def getter(
    client: httpx.AsyncClient, classify: Callable[[httpx.Response], Any], rate_per_s: float = FAST_RATE_PER_S
) -> RateLimitedGetter:
    return RateLimitedGetter(client, TokenBucket(rate_per_s), classify)


async def stored_prices(engine: AsyncEngine, coin: str, vs: str) -> list[tuple[datetime, Decimal, Decimal, Decimal]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT at, price, market_cap, volume FROM marketdata.coingecko_prices "
                "WHERE coin = :coin AND vs = :vs ORDER BY at"
            ),
            {"coin": coin, "vs": vs},
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def full_answer(
    fake: CoinGeckoFake, request: coingecko.CoinGeckoRequest
) -> list[tuple[datetime, Decimal, Decimal, Decimal]]:
    windows = coingecko.plan_windows(request.start, request.end, request.window)
    points = {}
    for index, (start, end) in enumerate(windows):
        for point in fake.answer(request.coin, request.vs, start, end):
            if point[0] < end or index == len(windows) - 1:
                points[point[0]] = point
    return [points[at] for at in sorted(points)]


async def test_coingecko_backfill_stores_the_fakes_full_answer_and_resumes_to_nothing(db: AsyncEngine) -> None:
    fake = CoinGeckoFake()
    request = coingecko.validate_request("bitcoin", "usd", DAY_ONE, DAY_ONE + timedelta(days=10), timedelta(days=3))
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=f"{url}/api/v3") as client:
            report = await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), request)
            again = await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), request)

    expected = full_answer(fake, request)
    assert len(expected) == 10 * 24 + 1  # hourly, both ends included
    assert await stored_prices(db, "bitcoin", "usd") == expected
    assert (report.pages, report.new_rows, report.gaps, report.completed) == (4, len(expected), [], True)
    assert (again.resumed, again.pages, again.new_rows) == (True, 0, 0)
    assert [r.params["from"] for r in fake.requests] == [
        str(int((DAY_ONE + timedelta(days=3 * i)).timestamp())) for i in range(4)
    ]


class _StopAfterFirstWindow(Exception):
    pass


def _stop(_reached: datetime, _start: datetime, _end: datetime) -> None:
    raise _StopAfterFirstWindow


async def test_coingecko_resume_with_another_window_size_neither_skips_nor_repeats(db: AsyncEngine) -> None:
    fake = CoinGeckoFake()
    start, end = DAY_ONE, DAY_ONE + timedelta(days=10)
    first = coingecko.validate_request("bitcoin", "usd", start, end, timedelta(days=3))
    second = coingecko.validate_request("bitcoin", "usd", start, end, timedelta(days=2))
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=f"{url}/api/v3") as client:
            with pytest.raises(_StopAfterFirstWindow):
                await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), first, _stop)
            report = await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), second)

    assert report.resumed
    assert [r.params["from"] for r in fake.requests[1:]] == [
        str(int((start + timedelta(days=3 + 2 * i)).timestamp())) for i in range(4)
    ]
    assert await stored_prices(db, "bitcoin", "usd") == fake.answer("bitcoin", "usd", start, end)


async def test_coingecko_window_over_90_days_gets_daily_points(db: AsyncEngine) -> None:
    fake = CoinGeckoFake()
    request = coingecko.validate_request("ethereum", "eur", DAY_ONE - timedelta(days=200), DAY_ONE, timedelta(days=200))
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=f"{url}/api/v3") as client:
            await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), request)

    stored = await stored_prices(db, "ethereum", "eur")
    assert len(stored) == 201
    assert {b[0] - a[0] for a, b in itertools.pairwise(stored)} == {timedelta(days=1)}
    assert all(row[0].hour == 0 for row in stored)


async def test_coingecko_429_waits_the_retry_after_and_the_bucket_spaces_requests(db: AsyncEngine) -> None:
    fake = CoinGeckoFake()
    fake.fail_next(429, 1, retry_after_s=1)
    request = coingecko.validate_request("bitcoin", "usd", DAY_ONE, DAY_ONE + timedelta(days=4), timedelta(days=1))
    rate_per_s = 10.0
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=f"{url}/api/v3") as client:
            report = await coingecko.backfill_coingecko(db, getter(client, coingecko.classify, rate_per_s), request)

    statuses = [r.status for r in fake.requests]
    assert statuses == [429, 200, 200, 200, 200]
    assert fake.requests[1].at_s - fake.requests[0].at_s >= 0.99  # Retry-After: 1
    gaps_s = [b.at_s - a.at_s for a, b in zip(fake.requests[1:], fake.requests[2:], strict=False)]
    assert min(gaps_s) >= 1 / rate_per_s - 0.01
    assert report.new_rows == len(full_answer(fake, request))


async def test_coingecko_free_tier_throttling_still_yields_every_point(db: AsyncEngine) -> None:
    fake = CoinGeckoFake(calls_per_window=2, window_s=1.0)
    request = coingecko.validate_request("tether", "usd", DAY_ONE, DAY_ONE + timedelta(days=5), timedelta(days=1))
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=f"{url}/api/v3") as client:
            await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), request)

    assert 429 in {r.status for r in fake.requests}
    assert [r.status for r in fake.requests].count(200) == 5
    assert await stored_prices(db, "tether", "usd") == full_answer(fake, request)


async def test_coingecko_gap_is_reported_and_counted_in_the_checkpoint(db: AsyncEngine) -> None:
    hole = (DAY_ONE + timedelta(days=1, hours=3), DAY_ONE + timedelta(days=1, hours=9))
    fake = CoinGeckoFake(gaps=[hole])
    request = coingecko.validate_request("bitcoin", "usd", DAY_ONE, DAY_ONE + timedelta(days=2), timedelta(days=2))
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=f"{url}/api/v3") as client:
            report = await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), request)

    assert [(g.after, g.before) for g in report.gaps] == [(hole[0] - timedelta(hours=1), hole[1])]
    assert len(await stored_prices(db, "bitcoin", "usd")) == 2 * 24 + 1 - 6
    async with db.connect() as connection:
        gaps = (await connection.execute(text("SELECT gaps FROM marketdata.backfill_checkpoints"))).scalar_one()
    assert gaps == 1


async def test_coingecko_unknown_coin_is_a_definitive_refusal(db: AsyncEngine) -> None:
    fake = CoinGeckoFake()
    request = coingecko.validate_request("no-such-coin", "usd", DAY_ONE, DAY_ONE + timedelta(days=1), timedelta(days=1))
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=f"{url}/api/v3") as client:
            with pytest.raises(SourceRefused) as refused:
                await coingecko.backfill_coingecko(db, getter(client, coingecko.classify), request)
    assert refused.value.status_code == 404
    assert len(fake.requests) == 1  # never retried


async def stored_trades(engine: AsyncEngine, symbol: str) -> list[tuple[str, datetime, Decimal, Decimal, str]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT trade_id, traded_at, price, quantity, side FROM marketdata.trades "
                "WHERE venue = 'kraken' AND instrument = :symbol ORDER BY traded_at"
            ),
            {"symbol": symbol},
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def tape_rows(
    fake: KrakenTradesFake, pair: str, start: datetime, end: datetime
) -> list[tuple[str, datetime, Decimal, Decimal, str]]:
    sides = {"b": "buy", "s": "sell"}
    return [
        (str(t.trade_id), t.traded_at, t.price, t.volume, sides[t.side]) for t in fake.trades_between(pair, start, end)
    ]


async def test_kraken_backfill_follows_since_and_stores_exactly_the_range(db: AsyncEngine) -> None:
    fake = KrakenTradesFake(start=DAY_ONE, count=1_000, page_size=100)
    tape = fake.tapes["XXBTZUSD"]
    start, end = tape[120].traded_at, tape[870].traded_at
    request = kraken_trades.validate_request("BTC/USD", start, end)
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            report = await kraken_trades.backfill_kraken(db, getter(client, kraken_trades.classify), request)
            again = await kraken_trades.backfill_kraken(db, getter(client, kraken_trades.classify), request)

    assert await stored_trades(db, "BTC/USD") == tape_rows(fake, "XXBTZUSD", start, end)
    assert report.new_rows == 750
    assert report.completed
    assert (again.resumed, again.pages) == (True, 0)
    cursors = [r.params["since"] for r in fake.requests]
    assert cursors[1] == str(tape[219].time_us * 1_000)  # the first page's `last`


async def test_kraken_rate_limit_and_outage_are_retried(db: AsyncEngine) -> None:
    fake = KrakenTradesFake(start=DAY_ONE, count=300, page_size=100)
    fake.fail_next("rate_limit", 2)
    fake.fail_next("unavailable", 1)
    end = DAY_ONE + timedelta(days=1)
    request = kraken_trades.validate_request("ETH/USD", DAY_ONE, end)
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            report = await kraken_trades.backfill_kraken(db, getter(client, kraken_trades.classify), request)

    assert [r.status for r in fake.requests][:3] == [200, 200, 503]
    assert report.completed
    assert await stored_trades(db, "ETH/USD") == tape_rows(fake, "XETHZUSD", DAY_ONE, end)


async def test_kraken_malformed_row_names_the_position_and_stores_nothing_of_its_page(db: AsyncEngine) -> None:
    fake = KrakenTradesFake(start=DAY_ONE, count=300, page_size=100)
    end = DAY_ONE + timedelta(days=1)
    request = kraken_trades.validate_request("BTC/USD", DAY_ONE, end)
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            kraken = getter(client, kraken_trades.classify)
            fake.requests.clear()
            # The first page is clean; the second carries one malformed row.
            first = await kraken.get("/0/public/Trades", {"pair": "XXBTZUSD", "since": "0"})
            assert len(first["result"]["XXBTZUSD"]) == 100
            fake.fail_next("malformed_row")
            with pytest.raises(PayloadError) as bad:
                await kraken_trades.backfill_kraken(db, kraken, request)
            assert str(bad.value).startswith("kraken response at result.XXBTZUSD[50]: price")
            assert await stored_trades(db, "BTC/USD") == []
            resumed = await kraken_trades.backfill_kraken(db, kraken, request)

    assert resumed.completed
    assert await stored_trades(db, "BTC/USD") == tape_rows(fake, "XXBTZUSD", DAY_ONE, end)


async def test_kraken_unknown_pair_is_refused_without_retry(db: AsyncEngine) -> None:
    fake = KrakenTradesFake(count=10)
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            with pytest.raises(SourceRefused, match="EQuery:Unknown asset pair"):
                await getter(client, kraken_trades.classify).get("/0/public/Trades", {"pair": "XDOGEZUSD"})
    assert len(fake.requests) == 1


async def test_one_minute_candles_from_backfilled_trades_match_the_tape(db: AsyncEngine) -> None:
    fake = KrakenTradesFake(start=DAY_ONE, count=400, page_size=100)
    end = DAY_ONE + timedelta(days=1)
    with serve_on_loopback(fake.app) as url:
        async with httpx.AsyncClient(base_url=url) as client:
            request = kraken_trades.validate_request("BTC/USD", DAY_ONE, end)
            await kraken_trades.backfill_kraken(db, getter(client, kraken_trades.classify), request)

    async with db.connect() as connection:
        candles = (
            await connection.execute(
                text(
                    "SELECT date_trunc('minute', traded_at) AS minute, "
                    "(array_agg(price ORDER BY traded_at))[1], max(price), min(price), "
                    "(array_agg(price ORDER BY traded_at DESC))[1], sum(quantity), count(*) "
                    "FROM marketdata.trades WHERE instrument = 'BTC/USD' GROUP BY 1 ORDER BY 1"
                )
            )
        ).all()
    by_minute: dict[datetime, list[Decimal]] = {}
    volumes: dict[datetime, Decimal] = {}
    for trade in fake.trades_between("XXBTZUSD", DAY_ONE, end):
        minute = trade.traded_at.replace(second=0, microsecond=0)
        by_minute.setdefault(minute, []).append(trade.price)
        volumes[minute] = volumes.get(minute, Decimal(0)) + trade.volume
    expected = [(m, p[0], max(p), min(p), p[-1], volumes[m], len(p)) for m, p in sorted(by_minute.items())]
    assert [tuple(c) for c in candles] == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["coingecko", "--coin", "bitcoin", "--from", "2026-02-01", "--to", "2026-01-01"], "--from: "),
        (
            ["coingecko", "--coin", "bitcoin", "--from", "2025-01-01", "--to", "2026-01-01", "--window-days", "400"],
            "--window-days: ",
        ),
        (["coingecko", "--coin", "Bitcoin!", "--from", "2025-01-01", "--to", "2026-01-01"], "--coin: "),
        (["coingecko", "--coin", "bitcoin", "--vs", "u$d", "--from", "2025-01-01", "--to", "2026-01-01"], "--vs: "),
        (["coingecko", "--coin", "bitcoin", "--to", "2026-01-01"], "--from: is required"),
        (["kraken", "--symbol", "DOGE/USD", "--from", "2026-01-01"], "--symbol: unknown symbol"),
        (["kraken", "--symbol", "BTC/USD", "--from", "2026-13-01"], "--from: "),
        (["kraken", "--symbol", "BTC/USD", "--from", "2026-02-01", "--to", "2026-01-01"], "--from: "),
    ],
)
def test_cli_bad_input_names_the_field(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["backfill", *args])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output


def test_cli_unknown_coin_names_the_coin_field(backfill_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_DATABASE_URL", backfill_url)
    fake = CoinGeckoFake()
    with serve_on_loopback(fake.app) as url:
        result = CliRunner().invoke(
            app,
            ["backfill", "coingecko", "--coin", "dogecoin", "--from", "2026-01-01", "--to", "2026-01-02"],
            env={"AETHER_COINGECKO_URL": f"{url}/api/v3"},
        )
    assert result.exit_code == 2
    assert "--coin: coingecko refused the request (HTTP 404)" in result.output
