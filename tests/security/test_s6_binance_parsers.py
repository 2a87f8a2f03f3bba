"""RELIABILITY S6 (Binance part): the REST answer parsers and the depth-stream decoders survive garbage.

Every parser of `shared.venues.binance.wire` and `shared.venues.binance.book` gets (a) arbitrary JSON values and
(b) the documented example answers with one field replaced by an arbitrary JSON value or deleted; the body decoder
gets arbitrary bytes; the local book gets arbitrary (valid) diff events. The only exception allowed is the
validation error (`BinanceWireError`; the book: `BookGap`). Writes reports/reliability/S6-binance.json.
AETHER_SCALE multiplies the examples (nightly runs).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.venues.binance import wire
from shared.venues.binance.book import BookGap, LocalBook, depth_snapshot, depth_update
from tests.reliability.conftest import RecordWriter
from tests.security.test_s6_kraken_rest_parsers import _mutated, _paths, json_values

SCALE = int(os.environ.get("AETHER_SCALE", "1"))
EXAMPLES = 100 * SCALE

# Shapes from developers.binance.com/docs/binance-spot-api-docs/rest-api (the endpoints' response examples).
ORDER = {
    "symbol": "LTCBTC",
    "orderId": 1,
    "orderListId": -1,
    "clientOrderId": "myOrder1",
    "price": "0.1",
    "origQty": "1.0",
    "executedQty": "0.0",
    "cummulativeQuoteQty": "0.0",
    "status": "NEW",
    "timeInForce": "GTC",
    "type": "LIMIT",
    "side": "BUY",
    "stopPrice": "0.0",
    "icebergQty": "0.0",
    "time": 1499827319559,
    "updateTime": 1499827319559,
    "isWorking": True,
}
TRADE = {
    "symbol": "BNBBTC",
    "id": 28457,
    "orderId": 100234,
    "orderListId": -1,
    "price": "4.00000100",
    "qty": "12.00000000",
    "quoteQty": "48.000012",
    "commission": "10.10000000",
    "commissionAsset": "BNB",
    "time": 1499865549590,
    "isBuyer": True,
    "isMaker": False,
    "isBestMatch": True,
}
EXCHANGE_INFO = {
    "symbols": [
        {
            "symbol": "ETHBTC",
            "status": "TRADING",
            "baseAsset": "ETH",
            "baseAssetPrecision": 8,
            "quoteAsset": "BTC",
            "quoteAssetPrecision": 8,
            "filters": [
                {
                    "filterType": "PRICE_FILTER",
                    "minPrice": "0.00000100",
                    "maxPrice": "100000",
                    "tickSize": "0.00000100",
                },
                {"filterType": "LOT_SIZE", "minQty": "0.00100000", "maxQty": "100000", "stepSize": "0.00100000"},
                {"filterType": "NOTIONAL", "minNotional": "0.00010000"},
            ],
        }
    ]
}
DEPTH_UPDATE = {
    "e": "depthUpdate",
    "E": 1672515782136,
    "s": "BNBBTC",
    "U": 157,
    "u": 160,
    "b": [["0.0024", "10"]],
    "a": [["0.0026", "100"]],
}
EXECUTION_REPORT = {
    "e": "executionReport",
    "E": 1499405658658,
    "s": "ETHBTC",
    "c": "mUvoqJxFIILMdfAW5iGSOW",
    "S": "BUY",
    "o": "LIMIT",
    "f": "GTC",
    "q": "1.00000000",
    "p": "0.10264410",
    "x": "TRADE",
    "X": "FILLED",
    "i": 4293153,
    "l": "1.00000000",
    "z": "1.00000000",
    "L": "0.10264410",
    "n": "0.00010264",
    "N": "BTC",
    "T": 1499405658657,
    "t": 12,
    "m": False,
    "C": "",
}
PARSERS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "execution_report": (wire.execution_report, EXECUTION_REPORT),
    "listen_key": (wire.listen_key, {"listenKey": "pqia91ma19a5s61cv6a81va65sdf19v8a65a1a5s61cv6a81va65sdf19v8a65a1"}),
    "order": (wire.order, ORDER),
    "orders": (wire.orders, [ORDER]),
    "trades": (wire.trades, [TRADE]),
    "exchange_info": (wire.exchange_info, EXCHANGE_INFO),
    "balances": (wire.balances, {"balances": [{"asset": "BTC", "free": "4723846.89208129", "locked": "0.00000000"}]}),
    "server_time": (wire.server_time, {"serverTime": 1499827319559}),
    "error": (wire.error, {"code": -1121, "msg": "Invalid symbol."}),
    "depth_update": (depth_update, DEPTH_UPDATE),
    "depth_snapshot": (depth_snapshot, {"lastUpdateId": 1027024, "bids": [["4.0", "431.0"]], "asks": [["4.2", "12"]]}),
}
RESULTS: dict[str, list[int]] = {}


def _run(name: str, call: Callable[[], Any], allowed: tuple[type[Exception], ...] = (wire.BinanceWireError,)) -> None:
    tally = RESULTS.setdefault(name, [0, 0])
    tally[0] += 1
    try:
        call()
    except allowed:
        pass
    except Exception:
        tally[1] += 1
        raise


FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], database=None
)


@FUZZ
@given(name=st.sampled_from(sorted(PARSERS)), value=json_values)
def test_s6_arbitrary_json_is_only_a_validation_error(name: str, value: Any) -> None:
    _run(name, lambda: PARSERS[name][0](value))


@FUZZ
@given(name=st.sampled_from(sorted(PARSERS)), data=st.data(), replacement=json_values, delete=st.booleans())
def test_s6_documented_answers_with_a_field_broken(
    name: str, data: st.DataObject, replacement: Any, delete: bool
) -> None:
    example = PARSERS[name][1]
    path = data.draw(st.sampled_from(_paths(example)))
    _run(name, lambda: PARSERS[name][0](_mutated(example, path, replacement, delete)))


@FUZZ
@given(body=st.binary(max_size=200))
def test_s6_bodies_decode_or_are_validation_errors(body: bytes) -> None:
    _run("decode", lambda: wire.error(wire.decode(body)))


levels = st.lists(st.tuples(st.integers(1, 30), st.integers(0, 5)).map(lambda pq: [str(pq[0]), str(pq[1])]), max_size=4)
events = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), levels, levels), min_size=1, max_size=15)


@settings(FUZZ, max_examples=EXAMPLES // 2)
@given(snapshot_id=st.integers(0, 20), moves=events)
def test_s6_the_local_book_only_raises_gaps_and_never_keeps_a_crossed_id(snapshot_id: int, moves: Any) -> None:
    book = LocalBook("BNBBTC")
    update_id = 0

    def play() -> None:
        nonlocal update_id
        for i, (skip, length, bids, asks) in enumerate(moves):
            first = update_id + 1 + skip
            update_id = first + length
            event = {"e": "depthUpdate", "E": i, "s": "BNBBTC", "U": first, "u": update_id, "b": bids, "a": asks}
            try:
                book.on_update(depth_update(event))
            except BookGap:
                assert not book.synced
            if i == 2:
                try:
                    book.on_snapshot(depth_snapshot({"lastUpdateId": snapshot_id, "bids": [], "asks": []}))
                except BookGap:
                    assert not book.synced
            if book.synced:
                assert book.update_id is not None
                assert book.update_id >= snapshot_id
                assert all(q > 0 for q in (*book.bids.values(), *book.asks.values()))

    _run("local_book", play)


def test_s6_documented_examples_parse() -> None:
    for name, (parser, example) in PARSERS.items():
        assert parser(example) is not None, name


def test_s6_record(write_reliability_record: RecordWriter, reliability_seed: int) -> None:
    assert set(RESULTS) == {*PARSERS, "decode", "local_book"}, "a fuzz test did not run"
    crashes = sum(c for _, c in RESULTS.values())
    write_reliability_record(
        {
            "id": "S6-binance",
            "seed": reliability_seed,
            "cases": sum(n for n, _ in RESULTS.values()),
            "violations": crashes,
            "parsers": {name: {"cases": n, "crashes": c} for name, (n, c) in sorted(RESULTS.items())},
        }
    )
    assert crashes == 0
