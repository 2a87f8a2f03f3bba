"""Matching engine properties over generated sessions (hypothesis): every order's fills, leaves and prices
add up, the same inputs give the same reports, and a restored engine continues exactly like the original.

The hand-computed cases are in test_matching.py.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal as D

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from shared.domain.matching import EngineState, ExecutionReport, LatencyModel, MatchingEngine
from shared.domain.sim_orders import SimOrder
from shared.domain.types import OrderSide, OrderType, TimeInForce
from tests.kit.matching import BUY, CANCELED, FILL, MAKER, REJECTED, SELL, T0

price_ticks = st.integers(min_value=0, max_value=40)  # price = 95 + ticks / 4, 95 .. 105
sizes = st.integers(min_value=1, max_value=20).map(lambda n: D(n) / 10)


def tick_price(ticks: int) -> D:
    return D(95) + D(ticks) / 4


@st.composite
def snapshots(draw: st.DrawFn) -> tuple[list[tuple[D, D]], list[tuple[D, D]]]:
    split = draw(st.integers(min_value=1, max_value=39))  # bids below the split tick, asks from it up
    bid_ticks = draw(st.sets(st.integers(min_value=0, max_value=split - 1), max_size=4))
    ask_ticks = draw(st.sets(st.integers(min_value=split, max_value=40), max_size=4))
    bids = [(tick_price(t), draw(sizes)) for t in sorted(bid_ticks)]
    asks = [(tick_price(t), draw(sizes)) for t in sorted(ask_ticks)]
    return bids, asks


@st.composite
def sim_orders(draw: st.DrawFn, order_id: str) -> SimOrder:
    kind = draw(st.sampled_from([OrderType.LIMIT, OrderType.LIMIT, OrderType.LIMIT, *OrderType]))
    side = draw(st.sampled_from([BUY, SELL]))
    limit_price = tick_price(draw(price_ticks)) if kind in {OrderType.LIMIT, OrderType.STOP_LOSS_LIMIT} else None
    trigger = tick_price(draw(price_ticks)) if kind not in {OrderType.MARKET, OrderType.LIMIT} else None
    tif = draw(st.sampled_from([TimeInForce.GTC, TimeInForce.GTC, *TimeInForce]))
    post_only = kind is OrderType.LIMIT and tif is TimeInForce.GTC and draw(st.booleans())
    return SimOrder(order_id, side, kind, draw(sizes), limit_price, trigger, tif, post_only)


@dataclass(frozen=True)
class Snapshot:
    bids: list[tuple[D, D]]
    asks: list[tuple[D, D]]


@dataclass(frozen=True)
class Delta:
    side: OrderSide
    price: D
    quantity: D


@dataclass(frozen=True)
class Print:
    price: D
    quantity: D
    aggressor: OrderSide


@dataclass(frozen=True)
class Submit:
    order: SimOrder


@dataclass(frozen=True)
class Cancel:
    order_id: str


@dataclass(frozen=True)
class Advance:
    pass


Event = Snapshot | Delta | Print | Submit | Cancel | Advance


@st.composite
def sessions(draw: st.DrawFn) -> list[tuple[int, Event]]:
    """Up to 40 events, each after 0-15 ms, starting from a snapshot."""
    events: list[tuple[int, Event]] = [(0, Snapshot(*draw(snapshots())))]
    submitted = ["o0"]
    for n in range(draw(st.integers(min_value=1, max_value=40))):
        choice = draw(st.sampled_from(["submit", "submit", "cancel", "trade", "trade", "delta", "snapshot", "advance"]))
        event: Event = Advance()
        if choice == "submit":
            event = Submit(draw(sim_orders(f"o{n}")))
            submitted.append(f"o{n}")
        elif choice == "cancel":
            event = Cancel(draw(st.sampled_from(submitted)))
        elif choice == "trade":
            event = Print(tick_price(draw(price_ticks)), draw(sizes), draw(st.sampled_from([BUY, SELL])))
        elif choice == "delta":
            quantity = draw(st.sampled_from([D(0), D("0.3"), D("1.2")]))
            event = Delta(draw(st.sampled_from([BUY, SELL])), tick_price(draw(price_ticks)), quantity)
        elif choice == "snapshot":
            event = Snapshot(*draw(snapshots()))
        events.append((draw(st.integers(min_value=0, max_value=15)), event))
    return events


def play(
    engine: MatchingEngine, events: list[tuple[int, Event]], start: datetime
) -> tuple[list[ExecutionReport], datetime]:
    reports: list[ExecutionReport] = []
    now = start
    for step_ms, event in events:
        now += timedelta(milliseconds=step_ms)
        match event:
            case Snapshot(bids, asks):
                reports += engine.on_book_snapshot(bids, asks, now)
            case Delta(side, price, quantity):
                reports += engine.on_book_delta(side, price, quantity, now)
            case Print(price, quantity, aggressor):
                reports += engine.on_trade(price, quantity, aggressor, now)
            case Submit(order):
                reports += engine.advance(now) + engine.submit(order, now)
            case Cancel(order_id):
                reports += engine.advance(now) + engine.cancel(order_id, now)
            case Advance():
                reports += engine.advance(now)
    return reports, now


LATENCIES = st.one_of(
    st.none(),
    st.builds(
        LatencyModel,
        submit_delay=st.integers(min_value=0, max_value=20).map(lambda n: timedelta(milliseconds=n)),
        cancel_delay=st.integers(min_value=0, max_value=20).map(lambda n: timedelta(milliseconds=n)),
    ),
)


def check_fill(order: SimOrder, report: ExecutionReport, filled: D) -> None:
    assert report.quantity is not None
    assert report.quantity > 0
    assert report.leaves == order.quantity - filled
    assert report.price is not None
    if report.liquidity is MAKER:
        assert report.price == order.limit_price
    elif order.limit_price is not None and order.side is BUY:
        assert report.price <= order.limit_price
    elif order.limit_price is not None:
        assert report.price >= order.limit_price


def check_order_accounting(events: list[tuple[int, Event]], reports: list[ExecutionReport]) -> dict[str, D]:
    """Per order: fills add up, leaves are consistent, prices respect limits, nothing after the end."""
    orders = {event.order.order_id: event.order for _, event in events if isinstance(event, Submit)}
    filled: dict[str, D] = {}
    done: set[str] = set()
    for report in reports:
        if report.kind is REJECTED and report.reason == "unknown_order":
            continue  # a cancel that found nothing: no change to any order
        order = orders[report.order_id]
        assert report.order_id not in done, report
        if report.kind is FILL:
            filled[order.order_id] = filled.get(order.order_id, D(0)) + (report.quantity or D(0))
            check_fill(order, report, filled[order.order_id])
            if report.leaves == 0:
                done.add(order.order_id)
        elif report.kind is CANCELED:
            assert report.leaves == order.quantity - filled.get(order.order_id, D(0))
            done.add(order.order_id)
        elif report.kind is REJECTED:
            done.add(order.order_id)
    return {order_id: orders[order_id].quantity - filled.get(order_id, D(0)) for order_id in orders}


@settings(max_examples=150, deadline=None)
@given(sessions(), LATENCIES)
def test_generated_sessions_keep_the_books_of_every_order(
    events: list[tuple[int, Event]], latency: LatencyModel | None
) -> None:
    engine = MatchingEngine("BTC/USD", latency)
    reports, _ = play(engine, events, T0)
    leaves = check_order_accounting(events, reports)
    for state in engine.open_orders():
        assert state.leaves == leaves[state.order.order_id]
    # the same inputs, the same reports, trade ids included
    assert play(MatchingEngine("BTC/USD", latency), events, T0)[0] == reports


def renamed(event: Event) -> Event:
    """The same event for orders of a second session (ids prefixed so they do not clash)."""
    if isinstance(event, Submit):
        return Submit(replace(event.order, order_id=f"r{event.order.order_id}"))
    if isinstance(event, Cancel):
        return Cancel(f"r{event.order_id}")
    return event


@settings(max_examples=100, deadline=None)
@given(sessions(), sessions(), LATENCIES, snapshots())
def test_a_restored_engine_continues_exactly_like_the_original(
    before: list[tuple[int, Event]],
    after: list[tuple[int, Event]],
    latency: LatencyModel | None,
    market: tuple[list[tuple[D, D]], list[tuple[D, D]]],
) -> None:
    original = MatchingEngine("BTC/USD", latency)
    _, now = play(original, before, T0)
    adapter = TypeAdapter(EngineState)
    restored = MatchingEngine("BTC/USD", latency)
    restored.restore(adapter.validate_json(adapter.dump_json(original.snapshot_state())))
    assert restored.snapshot_state() == original.snapshot_state()
    # the restarted engine gets its market back from a snapshot; the original sees the same snapshot
    resumed = [(0, Snapshot(*market)), *((step, renamed(event)) for step, event in after)]
    assert play(restored, resumed, now)[0] == play(original, resumed, now)[0]
