"""The backfill parsers on the providers' own documented examples (not only on our fakes' answers)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest

from data.ingest import coingecko, kraken_trades
from data.ingest.http import PayloadError, SourceRefused, TemporaryFailure, decode_json

# docs.kraken.com/api/docs/rest-api/get-recent-trades/ (response example, abridged to two trades)
KRAKEN_DOC_EXAMPLE = b"""{"error": [], "result": {"XXBTZUSD": [
 ["30243.40000", "0.34507674", 1688669597.8277369, "b", "m", "", 61044952],
 ["30243.30000", "0.00376960", 1688669598.2804112, "s", "l", "", 61044953]],
 "last": "1688671969993150842"}}"""
# The shape of docs.coingecko.com's market_chart/range response: [UNIX ms, number] pairs.
COINGECKO_EXAMPLE = b"""{"prices": [[1704067241331, 42261.04061756689], [1704070847420, 42493.27640875174]],
 "market_caps": [[1704067241331, 827596236151.1959], [1704070847420, 831531023621.4114]],
 "total_volumes": [[1704067241331, 14305769170.949772], [1704070847420, 14130205376.17086]]}"""


def test_kraken_documented_example_parses_exactly() -> None:
    payload = decode_json("kraken", httpx.Response(200, content=KRAKEN_DOC_EXAMPLE))
    page = kraken_trades.parse_trades(payload, "XXBTZUSD", "BTC/USD")
    assert page.last == "1688671969993150842"
    first, second = page.trades
    assert (first.trade_id, first.price, first.quantity, first.side) == (
        "61044952",
        Decimal("30243.40000"),
        Decimal("0.34507674"),
        "buy",
    )
    # Decimal seconds, floored to the microsecond: no float rounding.
    assert first.traded_at == datetime(2023, 7, 6, 18, 53, 17, 827736, tzinfo=UTC)
    assert second.side == "sell"


def test_coingecko_documented_shape_parses_exactly() -> None:
    payload = decode_json("coingecko", httpx.Response(200, content=COINGECKO_EXAMPLE))
    points = coingecko.parse_market_chart(payload)
    assert [p.at for p in points] == [
        datetime(2024, 1, 1, 0, 0, 41, 331000, tzinfo=UTC),
        datetime(2024, 1, 1, 1, 0, 47, 420000, tzinfo=UTC),
    ]
    assert points[0].price == Decimal("42261.04061756689")
    assert points[1].market_cap == Decimal("831531023621.4114")
    assert points[1].volume == Decimal("14130205376.17086")


@pytest.mark.parametrize(
    ("body", "position"),
    [
        ({"prices": [[1, 2]], "market_caps": "x", "total_volumes": []}, "market_caps"),
        ({"prices": [[1, 2], [1, 3]], "market_caps": [], "total_volumes": []}, "prices[1]"),
        ({"prices": [[1, -2]], "market_caps": [], "total_volumes": []}, "prices[0]"),
        ({"prices": [[1.5, 2]], "market_caps": [], "total_volumes": []}, "prices[0]"),
    ],
)
def test_coingecko_malformed_rows_name_the_position(body: dict[str, object], position: str) -> None:
    payload = decode_json("coingecko", httpx.Response(200, content=json.dumps(body).encode()))
    with pytest.raises(PayloadError) as bad:
        coingecko.parse_market_chart(payload)
    assert (bad.value.source, bad.value.position) == ("coingecko", position)


def test_kraken_errors_in_the_body_are_classified() -> None:
    limited = httpx.Response(200, json={"error": ["EGeneral:Too many requests"]})
    unknown = httpx.Response(200, json={"error": ["EQuery:Unknown asset pair"]})
    with pytest.raises(TemporaryFailure):
        kraken_trades.classify(limited)
    with pytest.raises(SourceRefused, match="Unknown asset pair"):
        kraken_trades.classify(unknown)


def test_coingecko_429_carries_retry_after() -> None:
    with pytest.raises(TemporaryFailure) as limited:
        coingecko.classify(httpx.Response(429, headers={"Retry-After": "7"}))
    assert limited.value.retry_after_s == 7.0


def test_windows_cover_the_range_and_gaps_include_the_edges() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    windows = coingecko.plan_windows(start, start + timedelta(days=7), timedelta(days=3))
    assert windows == [
        (start, start + timedelta(days=3)),
        (start + timedelta(days=3), start + timedelta(days=6)),
        (start + timedelta(days=6), start + timedelta(days=7)),
    ]
    assert [(g.after, g.before) for g in coingecko.find_gaps([], start, start + timedelta(hours=5))] == [
        (start, start + timedelta(hours=5))
    ]
