"""S6 (Kraken WebSocket v2 private `executions`): the decoder and the stream's handling of what it decodes survive
garbage.

Frames: arbitrary text and bytes; JSON shaped like `executions` messages (every documented key, with values of any
JSON type: huge integers, NaN, strings for numbers, negative and zero quantities, unknown exec types, fees in
several assets); mutations of the frames the protocol fake sends (trade, new, filled, canceled). Each is decoded
(`decode_frame`: a typed message or a `WireError`, nothing else), then handed to a stream's frame handler (it must
never raise, except `SubscriptionRefused` for a refused subscription, which ends the session by design). Every fill
the stream hands on has a positive quantity and price and a non-negative fee.

Violations: any other exception, or a fill that breaks those rules. Record: reports/reliability/S6-kraken-executions.json.
Scale: AETHER_SCALE multiplies the examples (default 1: 200 per strategy).
"""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.domain.types import (
    AccountId,
    Asset,
    ClientOrderId,
    Liquidity,
    OrderSide,
    OrderType,
    Symbol,
    TradeId,
    VenueOrderId,
)
from shared.venues.base import VenueFill, VenueOrder, VenueOrderStatus, VenueUpdate
from shared.venues.kraken.ws_private import KrakenExecutions, SubscriptionRefused
from shared.venues.kraken.ws_wire import WireError, decode_frame
from tests.fakes.kraken_ws_private import fill_execution, order_execution
from tests.reliability.conftest import RecordWriter

SCALE = int(os.environ.get("AETHER_SCALE", "1"))
EXAMPLES = 200 * SCALE
ACCOUNT = AccountId("acct-s6")
_AT = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
_ORDER = VenueOrder(
    ACCOUNT, ClientOrderId("c-1"), VenueOrderId("OABC12-DEF34-GHI567"), Symbol("BTC/USD"), OrderSide.BUY,
    OrderType.LIMIT, Decimal("1"), Decimal("1"), VenueOrderStatus.FILLED, None, _AT,
)  # fmt: skip
_FILL = VenueFill(
    ACCOUNT, ClientOrderId("c-1"), VenueOrderId("OABC12-DEF34-GHI567"), TradeId("TXYZ12-ABC34-DEF567"),
    Symbol("BTC/USD"), OrderSide.BUY, Decimal("1"), Decimal("95"), Decimal("0.152"), Asset("USD"), Liquidity.MAKER,
    _AT, 1_765_108_800_000_000_001,
)  # fmt: skip
REAL = [
    json.dumps({"channel": "executions", "type": kind, "data": data})
    for kind, data in [
        ("snapshot", [order_execution(replace(_ORDER, status=VenueOrderStatus.OPEN, filled_quantity=Decimal(0)))]),
        ("update", [fill_execution(_FILL)]),
        ("update", [order_execution(_ORDER)]),
        ("update", [{**order_execution(_ORDER), "exec_type": "canceled", "reason": "User requested"}]),
    ]
]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.sampled_from(["95", "0", "-1", "1e400", "NaN", "0.00000001", "BTC/USD", "USD", "m", "t", "buy", "sell"]),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
fee = st.fixed_dictionaries({}, optional={"asset": st.sampled_from(["USD", "BTC", ""]) | json_leaf, "qty": json_leaf})
execution = st.fixed_dictionaries(
    {},
    optional={
        "exec_type": st.sampled_from(
            ["trade", "new", "pending_new", "filled", "canceled", "expired", "amended", "restated", "status", "x"]
        )
        | json_leaf,
        "order_id": st.sampled_from(["OABC12-DEF34-GHI567", "O2", ""]) | json_leaf,
        "cl_ord_id": st.sampled_from(["c-1", "c-2"]) | json_leaf,
        "order_userref": json_leaf,
        "symbol": st.sampled_from(["BTC/USD", "ETH/USD", "X"]) | json_leaf,
        "side": st.sampled_from(["buy", "sell", "x"]) | json_leaf,
        "order_type": st.sampled_from(["limit", "market", "iceberg"]) | json_leaf,
        "order_qty": json_leaf,
        "cum_qty": json_leaf,
        "order_status": json_leaf,
        "exec_id": st.sampled_from(["TXYZ12-ABC34-DEF567", "T2"]) | json_leaf,
        "trade_id": json_leaf,
        "last_qty": json_leaf,
        "last_price": json_leaf,
        "liquidity_ind": st.sampled_from(["m", "t", "x"]) | json_leaf,
        "fees": st.lists(fee, max_size=2) | json_leaf,
        "reason": json_leaf,
        "timestamp": st.sampled_from(["2026-12-07T12:00:00.123456Z", "2026-12-07", "garbage"]) | json_leaf,
    },
)
shaped = st.fixed_dictionaries(
    {},
    optional={
        "channel": st.sampled_from(["executions", "heartbeat", "balances"]) | json_leaf,
        "type": st.sampled_from(["snapshot", "update"]) | json_leaf,
        "data": st.lists(execution, max_size=2) | execution | json_value,
        "method": st.sampled_from(["subscribe", "unsubscribe", "pong"]) | json_leaf,
        "success": json_leaf,
        "result": st.fixed_dictionaries({}, optional={"channel": st.sampled_from(["executions"]) | json_leaf}),
        "error": json_leaf,
    },
)


class _Venue:
    """What the stream calls on its adapter, recorded, without a network."""

    def __init__(self) -> None:
        self.updates: list[VenueUpdate] = []
        self.trade_ids: set[str] = set()

    def pair_quote(self, symbol: Symbol) -> Asset | None:
        return None

    async def deliver(self, update: VenueUpdate, source: str) -> bool:
        if isinstance(update, VenueFill):
            if update.trade_id in self.trade_ids:
                return False
            self.trade_ids.add(update.trade_id)
        self.updates.append(update)
        return True

    async def query(self, account_id: AccountId, client_order_id: ClientOrderId) -> VenueOrder | None:
        return None


class _Harness:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.venue = _Venue()
        self.stream = KrakenExecutions(self.venue, ACCOUNT)  # type: ignore[arg-type]
        self.cases = 0
        self.refusals = 0
        self.violations: list[str] = []

    def handle(self, frame: str | bytes) -> None:
        self.cases += 1
        try:
            decode_frame(frame)
        except WireError:
            pass
        except Exception as exc:  # a violation: anything but a validation error
            self.violations.append(f"decode: {type(exc).__name__}: {exc!s:.200} <- {frame!r:.200}")
        try:
            self.loop.run_until_complete(self.stream._frame(frame))
        except SubscriptionRefused:
            self.refusals += 1
        except Exception as exc:
            self.violations.append(f"stream: {type(exc).__name__}: {exc!s:.200} <- {frame!r:.200}")

    def check_fills(self) -> None:
        for update in self.venue.updates:
            if isinstance(update, VenueFill) and not (update.quantity > 0 and update.price > 0 and update.fee >= 0):
                self.violations.append(f"fill handed on: {update}")


def _mutations() -> st.SearchStrategy[str]:
    def mutate(frame: str, position: int, cut: int, insert: str) -> str:
        position %= len(frame) + 1
        return frame[:position] + insert + frame[position + cut :]

    return st.builds(mutate, st.sampled_from(REAL), st.integers(0, 2_000), st.integers(0, 8), st.text(max_size=6))


def test_s6_kraken_executions_decoders_survive_garbage(
    write_reliability_record: RecordWriter, reliability_seed: int
) -> None:
    harness = _Harness()
    for frame in REAL:  # the fake's own frames: decoded, a fill handed on
        harness.handle(frame)
    assert [type(u).__name__ for u in harness.venue.updates] == ["VenueFill", "VenueOrder", "VenueOrder"]
    assert harness.violations == []
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
    harness.check_fills()
    harness.loop.close()
    write_reliability_record(
        {
            "id": "S6-kraken-executions",
            "seed": reliability_seed,
            "cases": harness.cases,
            "violations": len(harness.violations),
            "faults_counted": harness.stream.stats.faults,
            "updates_handed_on": len(harness.venue.updates),
            "subscriptions_refused": harness.refusals,
            "examples": harness.violations[:5],
        }
    )
    assert harness.violations == []
    assert harness.cases >= 3 * EXAMPLES
    assert harness.stream.stats.faults.get("malformed", 0) > EXAMPLES  # the garbage did reach the validation
