"""X API v2 sentiment adapter against its protocol fake (real HTTP on loopback) and real PostgreSQL."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from typer.testing import CliRunner
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from data.ingest import x_sentiment
from data.ingest.cli import app
from data.ingest.http import BackfillInputError, RateLimitedGetter, SourceRefused, TokenBucket
from tests.fakes.loopback import serve_on_loopback
from tests.fakes.x_api import XApiFake
from tests.helpers import own_database

BEARER = "test-bearer-token"
START = datetime(2026, 11, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def sentiment_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "sentiment") as url:
        yield url


@pytest.fixture
async def db(sentiment_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(make_url(sentiment_url))
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE marketdata.sentiment_features"))
    yield engine
    await engine.dispose()


def client(url: str, bearer: str = BEARER) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, headers={"Authorization": f"Bearer {bearer}"})


def x_getter(http: httpx.AsyncClient) -> RateLimitedGetter:
    return RateLimitedGetter(http, TokenBucket(1_000.0), x_sentiment.classifier())


def expected_features(fake: XApiFake, tag: str, start: datetime, end: datetime) -> list[tuple[object, ...]]:
    analyzer = SentimentIntensityAnalyzer()
    rows = []
    hour = start
    while hour < end:
        texts = [p.text for p in fake.posts[tag] if hour <= p.created_at < hour + timedelta(hours=1)]
        compounds = [Decimal(str(analyzer.polarity_scores(t)["compound"])) for t in texts]
        n = Decimal(len(compounds))
        places = Decimal("1e-6")
        scores: tuple[Decimal | None, ...] = (
            (
                (sum(compounds, Decimal(0)) / n).quantize(places),
                (Decimal(sum(c >= Decimal("0.05") for c in compounds)) / n).quantize(places),
                (Decimal(sum(c <= Decimal("-0.05") for c in compounds)) / n).quantize(places),
            )
            if compounds
            else (None, None, None)
        )
        rows.append((hour, len(texts), len(texts), *scores))
        hour += timedelta(hours=1)
    return rows


async def stored(engine: AsyncEngine, tag: str) -> list[tuple[object, ...]]:
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT bucket_start, post_count, scored_posts, mean_compound, positive_share, negative_share "
                "FROM marketdata.sentiment_features WHERE cashtag = :tag ORDER BY bucket_start"
            ),
            {"tag": tag},
        )
        return [tuple(row) for row in rows]


async def test_counts_and_posts_become_hourly_vader_features(db: AsyncEngine) -> None:
    fake = XApiFake(bearer=BEARER, start=START, hours=48)
    end = START + timedelta(hours=30)
    with serve_on_loopback(fake.app) as url:
        async with client(url) as http:
            rows = await x_sentiment.ingest_sentiment(db, x_getter(http), "$BTC", START, end)
            await x_sentiment.ingest_sentiment(db, x_getter(http), "BTC", START, end)  # a rerun replaces

    expected = expected_features(fake, "BTC", START, end)
    assert len(rows) == 30
    assert await stored(db, "BTC") == expected
    assert any(row[3] is not None and row[3] > 0 for row in expected)
    assert any(row[3] is not None and row[3] < 0 for row in expected)
    paths = [request[1] for request in fake.requests[: len(fake.requests) // 2]]
    assert paths.count("/2/tweets/counts/recent") == 2  # 30 hours: two pages of 24 buckets


async def test_wrong_bearer_is_refused_without_retry(db: AsyncEngine) -> None:
    fake = XApiFake(bearer=BEARER)
    with serve_on_loopback(fake.app) as url:
        async with client(url, bearer="wrong") as http:
            with pytest.raises(SourceRefused) as refused:
                await x_sentiment.ingest_sentiment(db, x_getter(http), "BTC", START, START + timedelta(hours=2))
    assert refused.value.status_code == 401
    assert len(fake.requests) == 1


async def test_rate_limit_waits_until_the_reset_header(db: AsyncEngine) -> None:
    fake = XApiFake(bearer=BEARER, start=START, hours=60, limit_per_window=2, window_s=2)
    end = START + timedelta(hours=60)
    with serve_on_loopback(fake.app) as url:
        async with client(url) as http:
            await x_sentiment.ingest_sentiment(db, x_getter(http), "ETH", START, end)

    statuses = [request[2] for request in fake.requests]
    assert statuses.count(429) >= 1
    assert statuses.count(200) == 5  # 3 pages of counts (24 buckets each), 2 of posts (100 each)
    for throttled, retry in itertools.pairwise(fake.requests):
        if throttled[2] == 429:
            assert throttled[3] is not None
            assert retry[0] >= int(throttled[3]) - 0.01  # not before the announced reset
    assert await stored(db, "ETH") == expected_features(fake, "ETH", START, end)


@pytest.mark.parametrize("cashtag", ["bitcoin", "$B", "$BTC1", ""])
def test_bad_cashtag_names_the_field(cashtag: str) -> None:
    with pytest.raises(BackfillInputError) as bad:
        x_sentiment.validate_cashtag(cashtag)
    assert bad.value.field_name == "cashtag"


def test_cli_needs_the_bearer_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AETHER_X_BEARER_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["sentiment", "--cashtag", "BTC", "--from", "2026-11-30", "--to", "2026-12-01"])
    assert result.exit_code == 2
    assert "AETHER_X_BEARER_TOKEN: is not set" in result.output


def test_cli_scores_cashtags_from_the_fake(sentiment_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AETHER_DATABASE_URL", sentiment_url)
    monkeypatch.setenv("AETHER_X_BEARER_TOKEN", BEARER)
    fake = XApiFake(bearer=BEARER, start=START, hours=6)
    with serve_on_loopback(fake.app) as url:
        result = CliRunner().invoke(
            app,
            [
                "sentiment",
                "--cashtag",
                "BTC",
                "--cashtag",
                "$ETH",
                "--from",
                START.isoformat(),
                "--to",
                (START + timedelta(hours=6)).isoformat(),
                "--base-url",
                url,
                "--calls-per-s",
                "100",
            ],
        )
    assert result.exit_code == 0, result.output
    assert "x BTC,ETH: complete; 2 pages, 12 new rows" in result.output
    assert BEARER not in result.output
