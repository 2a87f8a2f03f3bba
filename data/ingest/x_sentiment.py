"""Sentiment from X (Twitter) API v2: post counts and recent posts on a cashtag, scored with VADER into hourly
features in `marketdata.sentiment_features`.

Formats (docs.x.com, "Get Posts Counts Recent" and "Search recent Posts"): `GET /2/tweets/counts/recent?query=
&granularity=hour&start_time=&end_time=` answers `{"data": [{"start", "end", "tweet_count"}], "meta":
{"total_tweet_count", "next_token"?}}`; `GET /2/tweets/search/recent?query=&max_results=10..100&tweet.fields=
created_at` answers `{"data": [{"id", "text", "created_at"}], "meta": {"result_count", "next_token"?}}`. Both take
an app-only bearer token and send `x-rate-limit-limit`, `x-rate-limit-remaining` and `x-rate-limit-reset` (UNIX
seconds); past the window's limit they answer 429 until the reset.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from data.ingest.backfill_store import HourFeatures, upsert_sentiment
from data.ingest.http import (
    BackfillInputError,
    PayloadError,
    RateLimitedGetter,
    SourceRefused,
    TemporaryFailure,
    decode_json,
    whole_number,
)
from shared.clock import utc_now

SOURCE = "x"
DEFAULT_BASE_URL = "https://api.x.com"
COUNTS_PATH = "/2/tweets/counts/recent"
SEARCH_PATH = "/2/tweets/search/recent"
MAX_RESULTS = 100
# VADER's own thresholds for a positive or negative text.
POSITIVE_AT, NEGATIVE_AT = 0.05, -0.05
_CASHTAG = re.compile(r"^[A-Z]{2,10}$")
_ANALYZER = SentimentIntensityAnalyzer()


def validate_cashtag(cashtag: str) -> str:
    """The cashtag without `$`, upper case letters only, or a BackfillInputError naming it."""
    tag = cashtag.removeprefix("$")
    if not _CASHTAG.fullmatch(tag):
        raise BackfillInputError("cashtag", f"{cashtag!r} is not a cashtag such as BTC or $ETH")
    return tag


def _instant(value: Any, position: str) -> datetime:
    if not isinstance(value, str) or len(value) > 40:
        raise PayloadError(SOURCE, position, "not an RFC 3339 time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise PayloadError(SOURCE, position, "not an RFC 3339 time") from None
    if moment.tzinfo is None:
        raise PayloadError(SOURCE, position, "time without a zone")
    return moment.astimezone(UTC)


def _next_token(payload: dict[str, Any]) -> str | None:
    meta = payload.get("meta")
    if not isinstance(meta, dict):
        raise PayloadError(SOURCE, "meta", "missing or not an object")
    token = meta.get("next_token")
    if token is not None and (not isinstance(token, str) or not token.isalnum() or len(token) > 200):
        raise PayloadError(SOURCE, "meta.next_token", "not a token")
    return token


def parse_counts(payload: Any) -> tuple[dict[datetime, int], str | None]:
    """Post counts by bucket start and the next page's token; PayloadError on any other shape."""
    if not isinstance(payload, dict):
        raise PayloadError(SOURCE, "body", "not a JSON object")
    rows = payload.get("data", [])
    if not isinstance(rows, list):
        raise PayloadError(SOURCE, "data", "not a list")
    counts: dict[datetime, int] = {}
    for index, row in enumerate(rows):
        position = f"data[{index}]"
        if not isinstance(row, dict):
            raise PayloadError(SOURCE, position, "not an object")
        count = whole_number(row.get("tweet_count"))
        if count is None or not 0 <= count < 2**62:
            raise PayloadError(SOURCE, f"{position}.tweet_count", "not a count")
        counts[_instant(row.get("start"), f"{position}.start")] = count
    return counts, _next_token(payload)


def parse_posts(payload: Any) -> tuple[list[tuple[datetime, str]], str | None]:
    """(created_at, text) of each post and the next page's token; PayloadError on any other shape."""
    if not isinstance(payload, dict):
        raise PayloadError(SOURCE, "body", "not a JSON object")
    rows = payload.get("data", [])
    if not isinstance(rows, list):
        raise PayloadError(SOURCE, "data", "not a list")
    posts = []
    for index, row in enumerate(rows):
        position = f"data[{index}]"
        if not isinstance(row, dict) or not isinstance(row.get("text"), str):
            raise PayloadError(SOURCE, position, "not a post with a text")
        posts.append((_instant(row.get("created_at"), f"{position}.created_at"), row["text"]))
    return posts, _next_token(payload)


def classifier(clock: Callable[[], datetime] = utc_now) -> Callable[[httpx.Response], Any]:
    """Response classification: 429 waits until `x-rate-limit-reset`; 401/403 (bearer) and other 4xx refuse."""

    def classify(response: httpx.Response) -> Any:
        status = response.status_code
        if status == 200:
            return decode_json(SOURCE, response)
        if status == 429 or status >= 500:
            reset = response.headers.get("x-rate-limit-reset", "")
            wait_s = None
            if reset.isdigit() and len(reset) < 12:
                wait_s = max(0.0, min(900.0, int(reset) - clock().timestamp()))
            raise TemporaryFailure(f"{SOURCE} answered {status}", wait_s)
        raise SourceRefused(SOURCE, status, response.reason_phrase)

    return classify


def score(texts: list[str]) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """Mean VADER compound, positive share and negative share of `texts` (None for no texts)."""
    if not texts:
        return None, None, None
    compounds = [Decimal(str(_ANALYZER.polarity_scores(t)["compound"])) for t in texts]
    n = Decimal(len(compounds))
    places = Decimal("1e-6")
    return (
        (sum(compounds, Decimal(0)) / n).quantize(places),
        (Decimal(sum(c >= Decimal(str(POSITIVE_AT)) for c in compounds)) / n).quantize(places),
        (Decimal(sum(c <= Decimal(str(NEGATIVE_AT)) for c in compounds)) / n).quantize(places),
    )


def hour_features(counts: dict[datetime, int], posts: list[tuple[datetime, str]]) -> list[HourFeatures]:
    """One row per counted hour: the count, and the scores of the posts created in that hour."""
    by_hour: dict[datetime, list[str]] = {}
    for created_at, post in posts:
        by_hour.setdefault(created_at.replace(minute=0, second=0, microsecond=0), []).append(post)
    return [
        HourFeatures(hour, counts[hour], len(by_hour.get(hour, [])), *score(by_hour.get(hour, [])))
        for hour in sorted(counts)
    ]


async def _all_pages(getter: RateLimitedGetter, path: str, params: dict[str, str], parse: Any) -> list[Any]:
    results: list[Any] = []
    token: str | None = None
    while True:
        page, token = parse(await getter.get(path, {**params, **({"next_token": token} if token else {})}))
        results.append(page)
        if token is None:
            return results


async def ingest_sentiment(
    engine: AsyncEngine, getter: RateLimitedGetter, cashtag: str, start: datetime, end: datetime
) -> list[HourFeatures]:
    """Counts and recent posts for `$cashtag` over [start, end), scored and stored as hourly features."""
    tag = validate_cashtag(cashtag)
    if start >= end:
        raise BackfillInputError("from", f"{start.isoformat()} is not before to ({end.isoformat()})")
    window = {"query": f"${tag} -is:retweet", "start_time": start.isoformat(), "end_time": end.isoformat()}
    counts: dict[datetime, int] = {}
    for page in await _all_pages(getter, COUNTS_PATH, {**window, "granularity": "hour"}, parse_counts):
        counts.update(page)
    posts: list[tuple[datetime, str]] = []
    search = {**window, "max_results": str(MAX_RESULTS), "tweet.fields": "created_at"}
    for page in await _all_pages(getter, SEARCH_PATH, search, parse_posts):
        posts.extend(page)
    rows = hour_features(counts, posts)
    async with engine.begin() as connection:
        await upsert_sentiment(connection, SOURCE, tag, rows)
    return rows
