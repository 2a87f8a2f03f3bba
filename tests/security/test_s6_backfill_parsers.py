"""S6 for the backfill parsers: garbage in the CoinGecko market_chart, Kraken Trades and X counts/search answers gives a
PayloadError (naming the source and the position) and never another exception; raw bodies through the HTTP
classification give a PayloadError, a refusal or a retryable failure, never a crash."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data.ingest import coingecko, kraken_trades, x_sentiment
from data.ingest.http import PayloadError, SourceRefused, TemporaryFailure

EXAMPLES = 100 * int(os.environ.get("AETHER_SCALE", "1"))
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)

# Decimals built from a mantissa and an exponent: hypothesis' own decimals() strategy is several times slower.
decimals = st.one_of(
    st.builds(lambda m, e: Decimal(m).scaleb(e), st.integers(-(10**22), 10**22), st.integers(-40, 40)),
    st.sampled_from([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity"), Decimal("-0")]),
)
numbers = st.one_of(st.integers(min_value=-(10**40), max_value=10**40), decimals, st.floats())
scalars = st.one_of(st.none(), st.booleans(), numbers, st.text(max_size=20))
json_like = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=10), inner, max_size=6)),
    max_leaves=15,
)
timestamps = st.one_of(st.integers(min_value=-(10**15), max_value=10**18), numbers, scalars)
coingecko_rows = st.lists(
    st.one_of(st.lists(st.one_of(timestamps, numbers, scalars), max_size=3), json_like), max_size=8
)
coingecko_payloads = st.one_of(
    json_like,
    st.fixed_dictionaries(dict.fromkeys(("prices", "market_caps", "total_volumes"), coingecko_rows)),
)
decimal_texts = st.one_of(decimals.map(str), st.text(max_size=12), st.just("1e999999999"))
kraken_rows = st.lists(
    st.one_of(
        st.tuples(
            decimal_texts,
            decimal_texts,
            timestamps,
            st.sampled_from(["b", "s", "x", 1]),
            st.sampled_from(["m", "l", None]),
            st.one_of(st.just(""), scalars),
            st.one_of(st.integers(), numbers, scalars),
        ).map(list),
        json_like,
    ),
    max_size=8,
)
kraken_payloads = st.one_of(
    json_like,
    st.fixed_dictionaries(
        {
            "error": st.one_of(st.just([]), json_like),
            "result": st.one_of(
                st.fixed_dictionaries(
                    {"XXBTZUSD": kraken_rows, "last": st.one_of(st.text(max_size=25), numbers, scalars)}
                ),
                json_like,
            ),
        }
    ),
)


x_times = st.one_of(st.just("2026-11-30T00:00:00.000Z"), st.text(max_size=30), scalars)
x_payloads = st.one_of(
    json_like,
    st.fixed_dictionaries(
        {
            "data": st.one_of(
                st.lists(
                    st.fixed_dictionaries(
                        {
                            "start": x_times,
                            "end": x_times,
                            "tweet_count": numbers,
                            "text": scalars,
                            "created_at": x_times,
                        }
                    ),
                    max_size=5,
                ),
                json_like,
            ),
            "meta": st.one_of(st.fixed_dictionaries({"next_token": scalars}), json_like),
        }
    ),
)


def _to_decimals(value: Any) -> Any:
    """What `decode_json` would give for the same document: floats as Decimal."""
    if isinstance(value, float):
        return Decimal(repr(value)) if value == value and abs(value) != float("inf") else value
    if isinstance(value, list):
        return [_to_decimals(v) for v in value]
    if isinstance(value, dict):
        return {k: _to_decimals(v) for k, v in value.items()}
    return value


def _source_of_failure(parse: Callable[[], object]) -> str | None:
    """None when the parse succeeds, the PayloadError's source when it fails that way; anything else propagates."""
    try:
        parse()
    except PayloadError as exc:
        return exc.source
    return None


def test_s6_backfill_parsers_raise_only_payload_errors(
    reliability_seed: int, write_reliability_record: Callable[[dict[str, Any]], Path]
) -> None:
    cases = {"coingecko": 0, "kraken": 0, "x": 0, "raw_bodies": 0}

    @SETTINGS
    @given(coingecko_payloads)
    def coingecko_parser(payload: Any) -> None:
        cases["coingecko"] += 1
        source = _source_of_failure(lambda: coingecko.parse_market_chart(_to_decimals(payload)))
        assert source in (None, "coingecko")

    @SETTINGS
    @given(kraken_payloads)
    def kraken_parser(payload: Any) -> None:
        cases["kraken"] += 1
        source = _source_of_failure(lambda: kraken_trades.parse_trades(_to_decimals(payload), "XXBTZUSD", "BTC/USD"))
        assert source in (None, "kraken")

    @SETTINGS
    @given(x_payloads)
    def x_parsers(payload: Any) -> None:
        cases["x"] += 1
        for parse in (x_sentiment.parse_counts, x_sentiment.parse_posts):
            source = _source_of_failure(lambda parse=parse: parse(_to_decimals(payload)))  # type: ignore[misc]
            assert source in (None, "x")

    @SETTINGS
    @given(
        st.one_of(st.binary(max_size=200), json_like.map(lambda v: json.dumps(v, default=str).encode())),
        st.sampled_from([200, 400, 404, 429, 500, 503]),
        st.one_of(st.none(), st.text(max_size=8)),
    )
    def raw_bodies(body: bytes, status: int, retry_after: str | None) -> None:
        cases["raw_bodies"] += 1
        headers = {"Retry-After": retry_after} if retry_after is not None and retry_after.isprintable() else {}
        try:
            response = httpx.Response(status, content=body, headers=headers)
        except (UnicodeEncodeError, ValueError):
            return
        for classify, parse in (
            (coingecko.classify, coingecko.parse_market_chart),
            (kraken_trades.classify, lambda p: kraken_trades.parse_trades(p, "XXBTZUSD", "BTC/USD")),
        ):
            with contextlib.suppress(PayloadError, SourceRefused, TemporaryFailure):
                parse(classify(response))

    coingecko_parser()
    kraken_parser()
    x_parsers()
    raw_bodies()
    write_reliability_record(
        {"id": "S6_backfill_parsers", "seed": reliability_seed, "cases": sum(cases.values()), "violations": 0, **cases}
    )
    assert min(cases.values()) >= EXAMPLES // 2
