"""S6 (Kraken WebSocket v2 public): the frame decoder and the client's handling of what it decodes survive garbage.

Frames: arbitrary text and bytes; JSON shaped like Kraken v2 messages (every channel and type, the documented keys
with values of any JSON type: huge integers, NaN, deep nesting, strings for numbers, negative and zero prices,
crossed and duplicated levels, checksums out of range); mutations of real frames from the recorded stream. Each is
decoded (`decode_frame`: a typed message or a `WireError`, nothing else) and then handed to a running client's
frame handler with a synced book (it must never raise: it counts, drops the book and resubscribes). After the run
the client's books are either dropped or still match their checksum: a wrong book is never kept.

Violations: any other exception, or a kept book whose checksum disagrees. Record: reports/reliability/S6-kraken-ws.json.
Scale: AETHER_SCALE multiplies the examples (default 1: 200 per strategy).
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.marketdata import MarketData, Trade
from shared.venues.kraken.book import PairPrecision
from shared.venues.kraken.ws_public import KrakenPublicFeed
from shared.venues.kraken.ws_wire import WireError, decode_frame
from tests.fakes.kraken_ws import recorded_stream
from tests.reliability.conftest import RecordWriter

SCALE = int(os.environ.get("AETHER_SCALE", "1"))
EXAMPLES = 200 * SCALE
REAL = list(recorded_stream(updates=60))

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["45283.5", "0", "-1", "1e400", "NaN", "0.00000001", "BTC/USD", "ETH/USD", "snapshot", "update"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
level = st.fixed_dictionaries(
    {"price": json_leaf, "qty": json_leaf},
    optional={"extra": json_value},
)
book_item = st.fixed_dictionaries(
    {},
    optional={
        "symbol": st.sampled_from(["BTC/USD", "ETH/USD", "X/Y", ""]) | st.text(max_size=40),
        "bids": st.lists(level, max_size=6) | json_value,
        "asks": st.lists(level, max_size=6) | json_value,
        "checksum": st.integers(min_value=-1, max_value=2**33) | json_leaf,
        "timestamp": st.sampled_from(["2026-12-07T00:00:00Z", "2026-12-07", "garbage"]) | json_leaf,
        "side": st.sampled_from(["buy", "sell", "x"]),
        "ord_type": st.sampled_from(["market", "limit", "x"]),
        "trade_id": json_leaf,
        "price": json_leaf,
        "qty": json_leaf,
        "pairs": json_value,
        "price_precision": json_leaf,
        "qty_precision": json_leaf,
    },
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "channel": st.sampled_from(["book", "trade", "instrument", "heartbeat", "status", "ohlc"]) | json_leaf,
        "type": st.sampled_from(["snapshot", "update"]) | json_leaf,
        "data": st.lists(book_item, max_size=3) | book_item | json_value,
        "method": st.sampled_from(["subscribe", "unsubscribe", "pong"]) | json_leaf,
        "success": json_leaf,
        "result": json_value,
        "error": json_leaf,
    },
)


class _Connection:
    """What the client sends back (resubscriptions), without a network."""

    def __init__(self) -> None:
        self.sent: list[str] = []

    async def send(self, frame: str) -> None:
        self.sent.append(frame)


class _Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.feed = KrakenPublicFeed(["BTC/USD", "ETH/USD"], self._sink)
        self.connection = _Connection()
        self.cases = 0
        self.violations: list[str] = []
        self.published = 0
        self.last_checksum: dict[str, int | None] = {}
        self.feed.precisions = {"BTC/USD": PairPrecision(1, 8), "ETH/USD": PairPrecision(1, 8)}
        for frame in REAL[1:3]:  # a synced BTC/USD book to be attacked
            self.handle(frame)

    async def _sink(self, message: MarketData) -> None:
        self.published += 1
        if not isinstance(message, Trade):
            self.last_checksum[message.symbol] = message.checksum

    def handle(self, frame: str | bytes) -> None:
        self.cases += 1
        try:
            decode_frame(frame)
        except WireError:
            pass
        except Exception as exc:  # a violation: anything but a validation error
            self.violations.append(f"decode: {type(exc).__name__}: {exc!s:.200} <- {frame!r:.200}")
        try:
            self.loop.run_until_complete(self.feed._frame(self.connection, frame))  # type: ignore[arg-type]
        except Exception as exc:
            self.violations.append(f"client: {type(exc).__name__}: {exc!s:.200} <- {frame!r:.200}")

    def check_books(self) -> None:
        for symbol, book in self.feed.books.items():
            if book.synced and book.checksum() != self.last_checksum.get(symbol):
                self.violations.append(f"{symbol}: the kept book is not the one last published")


def _mutations() -> st.SearchStrategy[str]:
    def mutate(frame: str, position: int, cut: int, insert: str) -> str:
        position %= len(frame) + 1
        return frame[:position] + insert + frame[position + cut :]

    return st.builds(mutate, st.sampled_from(REAL), st.integers(0, 10_000), st.integers(0, 8), st.text(max_size=6))


def test_s6_kraken_ws_decoders_survive_garbage(write_reliability_record: RecordWriter, reliability_seed: int) -> None:
    harness = _Harness()
    common = settings(
        max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )  # fmt: skip

    @common
    @given(st.text(max_size=200) | st.binary(max_size=200))
    def raw(frame: str | bytes) -> None:
        harness.handle(frame)

    @common
    @given(shaped)
    def structured(message: dict[str, Any]) -> None:
        harness.handle(json.dumps(message))

    @common
    @given(_mutations())
    def mutated(frame: str) -> None:
        harness.handle(frame)

    for run in (raw, structured, mutated):
        run()
        for frame in REAL[1:3]:  # resync between strategies, so updates keep meeting a synced book
            harness.handle(frame)
    harness.check_books()
    harness.loop.close()
    write_reliability_record(
        {
            "id": "S6-kraken-ws",
            "seed": reliability_seed,
            "cases": harness.cases,
            "violations": len(harness.violations),
            "faults_counted": harness.feed.stats.faults,
            "resubscriptions_sent": sum('"unsubscribe"' in frame for frame in harness.connection.sent),
            "examples": harness.violations[:5],
        }
    )
    assert harness.violations == []
    assert harness.cases >= 3 * EXAMPLES
    assert harness.feed.stats.faults.get("malformed", 0) > EXAMPLES  # the garbage did reach the validation
