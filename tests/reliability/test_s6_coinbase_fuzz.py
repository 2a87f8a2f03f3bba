"""S6 (Coinbase): the REST answer parsers and the WebSocket frame decoder survive garbage, and the public feed's
frame handler never raises for what it decodes nor keeps a wrong book.

Inputs: arbitrary text and bytes; JSON shaped like Coinbase's answers and frames (the documented keys with values of
any JSON type: huge integers, NaN, deep nesting, numbers for decimal strings, negative and zero prices and sizes,
unknown statuses and sides, sequence numbers that jump back and forth); mutations of real frames. Each REST answer
goes through every parser (a typed value or `CoinbaseWireError`, nothing else); each frame through `decode_frame`
(a typed frame or `WsWireError`) and then a running feed's handler (a gap or a crossed book ends the session for a
resync, anything else is a violation). After every frame the feed's books must be uncrossed.

Record: reports/reliability/S6-coinbase.json. Scale: AETHER_SCALE multiplies the examples (default 1: 100 each).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.marketdata import MarketData
from shared.venues.coinbase import wire
from shared.venues.coinbase.ws_public import CoinbasePublicFeed, _Reconnect
from shared.venues.coinbase.ws_wire import WsWireError, decode_frame
from tests.reliability.conftest import RecordWriter

SCALE = int(os.environ.get("AETHER_SCALE", "1"))
EXAMPLES = 100 * SCALE

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["100.5", "0", "-1", "1e400", "NaN", "BTC-USD", "OPEN", "FILLED", "BUY", "bid", "offer",
                     "2026-03-02T12:00:00.123456789Z", "snapshot", "update", "MAKER", "limit_limit_gtc"]),
)  # fmt: skip
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=10,
)


def _shaped(keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional=dict.fromkeys(keys, json_value))


ORDER_KEYS = ["order_id", "client_order_id", "product_id", "side", "status", "order_type", "filled_size",
              "created_time", "last_fill_time", "reject_reason", "order_configuration"]  # fmt: skip
order = _shaped(ORDER_KEYS) | st.fixed_dictionaries(
    dict.fromkeys(ORDER_KEYS[:-1], json_leaf), optional={"order_configuration": st.dictionaries(st.text(max_size=20),
                                                                                             _shaped(["base_size"]))}
)  # fmt: skip
fill = _shaped(["entry_id", "trade_id", "order_id", "product_id", "side", "price", "size", "commission",
                "liquidity_indicator", "trade_time", "sequence_timestamp"])  # fmt: skip
answers = st.one_of(
    st.fixed_dictionaries({"success": json_leaf}, optional={"success_response": _shaped(["order_id"]) | json_value,
                                                            "error_response": _shaped(["error", "message",
                                                                "new_order_failure_reason"]) | json_value}),
    st.fixed_dictionaries({"order": order | json_value}),
    st.fixed_dictionaries({"orders": st.lists(order, max_size=3) | json_value},
                          optional={"has_next": json_leaf, "cursor": json_leaf}),
    st.fixed_dictionaries({"fills": st.lists(fill, max_size=3) | json_value}, optional={"cursor": json_leaf}),
    st.fixed_dictionaries({"accounts": st.lists(_shaped(["currency", "available_balance", "hold"]), max_size=3)},
                          optional={"has_next": json_leaf, "cursor": json_leaf}),
    st.fixed_dictionaries({"products": st.lists(_shaped(["product_id", "base_currency_id", "quote_currency_id",
        "base_increment", "quote_increment", "price_increment", "base_min_size", "quote_min_size",
        "trading_disabled"]), max_size=3)}),
    st.fixed_dictionaries({"results": st.lists(_shaped(["order_id", "success", "failure_reason"]), max_size=3)}),
    st.dictionaries(st.text(max_size=10), json_value, max_size=4),
)  # fmt: skip
PARSERS: list[Callable[[Mapping[str, Any]], object]] = [
    wire.create_result, wire.get_order, wire.list_orders, wire.list_fills, wire.list_accounts, wire.list_products,
    wire.cancel_results,
]  # fmt: skip

level = st.fixed_dictionaries({"side": st.sampled_from(["bid", "offer"]) | json_leaf,
                               "price_level": st.sampled_from(["99", "100", "101", "102", "0"]) | json_leaf,
                               "new_quantity": st.sampled_from(["0", "1", "2.5"]) | json_leaf})  # fmt: skip
frames = st.fixed_dictionaries(
    {"channel": st.sampled_from(["l2_data", "market_trades", "heartbeats", "user", "subscriptions"]) | json_leaf,
     "sequence_num": st.integers(0, 40) | json_leaf,
     "events": st.lists(st.fixed_dictionaries({}, optional={
         "type": st.sampled_from(["snapshot", "update"]) | json_leaf, "product_id": st.just("BTC-USD") | json_leaf,
         "updates": st.lists(level, max_size=4) | json_value,
         "trades": st.lists(_shaped(["trade_id", "product_id", "price", "size", "side", "time"]), max_size=2),
         "orders": st.lists(_shaped(["order_id", "client_order_id", "product_id", "status"]), max_size=2)}),
         max_size=2) | json_value},
)  # fmt: skip


valid_events = st.fixed_dictionaries(
    {"type": st.sampled_from(["snapshot", "update", "update", "update"]), "product_id": st.just("BTC-USD"),
     "updates": st.lists(st.fixed_dictionaries({"side": st.sampled_from(["bid", "offer"]),
        "event_time": st.just("2026-03-02T12:00:00Z"),
        "price_level": st.sampled_from(["98", "99", "100", "101", "102", "103"]),
        "new_quantity": st.sampled_from(["0", "1", "2.5"])}), max_size=5)},
)  # fmt: skip


class _Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.published: list[MarketData] = []

        async def sink(message: MarketData) -> None:
            self.published.append(message)

        self.feed = CoinbasePublicFeed(["BTC/USD"], sink)
        self.cases = 0
        self.violations: list[str] = []
        self.resyncs = 0

    def parse(self, content: bytes) -> None:
        self.cases += 1
        try:
            obj = wire.body(content)
        except wire.CoinbaseWireError:
            return
        wire.error_answer(content)
        for parse in PARSERS:
            try:
                parse(obj)
            except wire.CoinbaseWireError:
                continue
            except Exception as exc:
                self.violations.append(f"{parse.__name__}: {type(exc).__name__}: {exc}"[:300])

    def next_frame(self, event: dict[str, Any]) -> None:
        """A well-formed l2_data frame with the next sequence number (books that may cross, levels that vanish)."""
        last = self.feed._tracker.last
        sequence = 0 if last is None else last + 1
        self.frame(json.dumps({"channel": "l2_data", "sequence_num": sequence, "events": [event]}))

    def frame(self, text: str | bytes) -> None:
        self.cases += 1
        try:
            decode_frame(text)
        except WsWireError:
            pass
        except Exception as exc:
            self.violations.append(f"decode_frame: {type(exc).__name__}: {exc}"[:300])
        try:
            self.loop.run_until_complete(self.feed._frame(text))
        except _Reconnect:
            self.resyncs += 1  # what the session does next: drop the books and resync from a fresh snapshot
            self.feed.books.clear()
            self.feed._published.clear()
            self.feed._tracker.reset()
        except Exception as exc:
            self.violations.append(f"feed: {type(exc).__name__}: {exc}"[:300])
        for book in self.feed.books.values():
            bids, asks = book.top(1)
            if bids and asks and bids[0][0] >= asks[0][0]:
                self.violations.append(f"crossed book kept: {bids[0]} / {asks[0]}")


def test_s6_coinbase_parsers_and_decoders_survive_garbage(
    write_reliability_record: RecordWriter, reliability_seed: int
) -> None:
    harness = _Harness()
    common = settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip

    @common
    @given(st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
    def raw_answers(content: bytes) -> None:
        harness.parse(content)

    @common
    @given(answers)
    def shaped_answers(answer: dict[str, Any]) -> None:
        harness.parse(json.dumps(answer).encode())

    @common
    @given(st.text(max_size=200) | st.binary(max_size=200))
    def raw_frames(frame: str | bytes) -> None:
        harness.frame(frame)

    @common
    @given(frames)
    def shaped_frames(frame: dict[str, Any]) -> None:
        harness.frame(json.dumps(frame))

    @common
    @given(valid_events)
    def sequenced_frames(event: dict[str, Any]) -> None:
        harness.next_frame(event)

    for run in (raw_answers, shaped_answers, raw_frames, shaped_frames, sequenced_frames):
        run()
    harness.loop.close()
    write_reliability_record(
        {
            "id": "S6-coinbase",
            "seed": reliability_seed,
            "cases": harness.cases,
            "violations": len(harness.violations),
            "faults_counted": harness.feed.stats.faults,
            "resyncs": harness.resyncs,
            "published": len(harness.published),
            "examples": harness.violations[:5],
        }
    )
    assert harness.violations == []
    assert harness.cases >= 5 * EXAMPLES
    assert harness.feed.stats.faults.get("malformed", 0) > EXAMPLES  # the garbage did reach the validation
    assert harness.published  # and some frames were valid enough to be published
