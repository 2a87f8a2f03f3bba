"""Matching engine with hand-computed expectations (the arithmetic is in the comments).

The properties over generated sessions are in test_matching_properties.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal as D

import pytest
from pydantic import TypeAdapter

from shared.domain.book import CrossedBook
from shared.domain.matching import (
    EngineState,
    EngineStateError,
    ExecutionReport,
    InvalidTrade,
    LatencyModel,
    MatchingEngine,
    ReportKind,
    RestingState,
)
from shared.domain.sim_orders import SimOrder
from shared.domain.types import Liquidity, OrderSide, OrderType, TimeInForce
from tests.kit.matching import ACCEPTED, BUY, CANCELED, FILL, MAKER, REJECTED, SELL, T0, TAKER, TRIGGERED

BIDS = [(D("99"), D("1.0")), (D("98"), D("2.0"))]
ASKS = [(D("100"), D("0.5")), (D("101"), D("0.7")), (D("102"), D("1.0"))]


def ms(n: int) -> datetime:
    return T0 + timedelta(milliseconds=n)


def engine_with_book(latency: LatencyModel | None = None) -> MatchingEngine:
    engine = MatchingEngine("BTC/USD", latency)
    assert engine.on_book_snapshot(bids=BIDS, asks=ASKS, now=T0) == []
    return engine


def market(order_id: str, side: OrderSide, quantity: str, tif: TimeInForce = TimeInForce.GTC) -> SimOrder:
    return SimOrder(order_id, side, OrderType.MARKET, D(quantity), time_in_force=tif)


def limit(
    order_id: str,
    side: OrderSide,
    quantity: str,
    price: str,
    tif: TimeInForce = TimeInForce.GTC,
    post_only: bool = False,
) -> SimOrder:
    return SimOrder(order_id, side, OrderType.LIMIT, D(quantity), D(price), time_in_force=tif, post_only=post_only)


def fills(reports: list[ExecutionReport]) -> list[tuple[str, D | None, D | None, Liquidity | None]]:
    return [(r.order_id, r.quantity, r.price, r.liquidity) for r in reports if r.kind is FILL]


def kinds(reports: list[ExecutionReport]) -> list[tuple[ReportKind, str | None]]:
    return [(r.kind, r.reason) for r in reports]


# --- taking liquidity ----------------------------------------------------------------------------------------


def test_market_buy_walks_three_levels() -> None:
    engine = engine_with_book()
    reports = engine.submit(market("o1", BUY, "1.5"), T0)
    # 0.5 @ 100 + 0.7 @ 101 + 0.3 @ 102 = 50 + 70.7 + 30.6 = 151.3 -> average 151.3 / 1.5 = 100.8666...
    assert kinds(reports) == [(ACCEPTED, None), (FILL, None), (FILL, None), (FILL, None)]
    assert fills(reports) == [
        ("o1", D("0.5"), D("100"), TAKER),
        ("o1", D("0.7"), D("101"), TAKER),
        ("o1", D("0.3"), D("102"), TAKER),
    ]
    notional = sum((r.quantity * r.price for r in reports if r.quantity and r.price), D(0))
    assert notional == D("151.3")
    assert (notional / D("1.5")).quantize(D("0.0001")) == D("100.8667")
    # leaves after each fill: 1.5 - 0.5 = 1.0, 1.0 - 0.7 = 0.3, 0.3 - 0.3 = 0
    assert [r.leaves for r in reports] == [D("1.5"), D("1.0"), D("0.3"), D("0")]
    assert [r.trade_id for r in reports[1:]] == ["BTC/USD-1", "BTC/USD-2", "BTC/USD-3"]
    assert engine.open_orders() == []


def test_market_order_beyond_visible_depth_cancels_the_rest() -> None:
    engine = engine_with_book()
    reports = engine.submit(market("o1", BUY, "3"), T0)
    # visible asks: 0.5 + 0.7 + 1.0 = 2.2, so 3 - 2.2 = 0.8 is canceled
    assert sum(q for _, q, _, _ in fills(reports) if q) == D("2.2")
    assert (reports[-1].kind, reports[-1].leaves, reports[-1].reason) == (CANCELED, D("0.8"), "no_liquidity")
    # the visible asks are all consumed now: the next market buy gets nothing
    second = engine.submit(market("o2", BUY, "0.1"), T0)
    assert kinds(second) == [(ACCEPTED, None), (CANCELED, "no_liquidity")]
    assert second[-1].leaves == D("0.1")


def test_market_order_on_an_empty_side_is_canceled() -> None:
    engine = MatchingEngine("BTC/USD")
    engine.on_book_snapshot(bids=[], asks=ASKS, now=T0)
    reports = engine.submit(market("o1", SELL, "1"), T0)
    assert kinds(reports) == [(ACCEPTED, None), (CANCELED, "no_liquidity")]
    assert reports[-1].leaves == D("1")


def test_consumed_liquidity_is_not_taken_twice_and_deltas_reconcile_it() -> None:
    engine = engine_with_book()
    assert fills(engine.submit(market("o1", BUY, "0.5"), T0)) == [("o1", D("0.5"), D("100"), TAKER)]
    # 100 is used up (consumed 0.5 of 0.5): the second order starts at 101
    assert fills(engine.submit(market("o2", BUY, "0.5"), T0)) == [("o2", D("0.5"), D("101"), TAKER)]
    # the venue shows 100 down to 0.4: the 0.1 decrease uses up our consumption, 0.5 - 0.1 = 0.4 consumed,
    # free 0.4 - 0.4 = 0; at 101 free is 0.7 - 0.5 = 0.2
    engine.on_book_delta(SELL, D("100"), D("0.4"), ms(1))
    assert fills(engine.submit(market("o3", BUY, "0.3"), ms(1))) == [
        ("o3", D("0.2"), D("101"), TAKER),
        ("o3", D("0.1"), D("102"), TAKER),
    ]
    # 100 grows to 0.9: the 0.5 increase is new liquidity behind ours, free 0.9 - 0.4 = 0.5
    engine.on_book_delta(SELL, D("100"), D("0.9"), ms(2))
    assert fills(engine.submit(market("o4", BUY, "0.6"), ms(2))) == [
        ("o4", D("0.5"), D("100"), TAKER),
        ("o4", D("0.1"), D("102"), TAKER),  # 102: 1.0 - 0.1 (o3) = 0.9 free
    ]
    # 101 removed and shown again: a removed level forgets what we took there
    engine.on_book_delta(SELL, D("101"), D("0"), ms(3))
    engine.on_book_delta(SELL, D("101"), D("0.7"), ms(3))
    assert fills(engine.submit(market("o5", BUY, "0.7"), ms(3))) == [("o5", D("0.7"), D("101"), TAKER)]
    # a snapshot is read level by level like a delta, so the same book state does not offer again what we took:
    # 100 shows 0.5 (down 0.4 from 0.9: our 0.9 less 0.4 = 0.5 still ours, free 0), 101 shows 0.7 (all ours),
    # 102 shows 1.0 (0.2 ours, free 0.8)
    engine.on_book_snapshot(bids=BIDS, asks=ASKS, now=ms(4))
    assert engine.free_levels(BUY) == [(D("102"), D("0.8"))]
    assert fills(engine.submit(market("o6", BUY, "0.5"), ms(4))) == [("o6", D("0.5"), D("102"), TAKER)]


def test_a_snapshot_of_the_same_book_state_does_not_offer_taken_liquidity_again() -> None:
    engine = engine_with_book()
    assert fills(engine.submit(market("o1", BUY, "0.5"), T0)) == [("o1", D("0.5"), D("100"), TAKER)]
    engine.on_book_snapshot(bids=BIDS, asks=ASKS, now=ms(1))  # the feed re-sends the book: 0.5 still shown at 100
    assert fills(engine.submit(market("o2", BUY, "0.5"), ms(1))) == [("o2", D("0.5"), D("101"), TAKER)]
    # a snapshot without the level (it traded away) forgets it: a new 0.3 there later is free
    engine.on_book_snapshot(bids=BIDS, asks=ASKS[1:], now=ms(2))
    engine.on_book_delta(SELL, D("100"), D("0.3"), ms(3))
    assert engine.free_levels(BUY)[0] == (D("100"), D("0.3"))


def test_preview_does_not_move_the_engine() -> None:
    engine = engine_with_book()
    order = market("o1", BUY, "0.6")
    assert engine.preview(order) == [(D("100"), D("0.5")), (D("101"), D("0.1"))]
    assert engine.free_levels(BUY) == [(D("100"), D("0.5")), (D("101"), D("0.7")), (D("102"), D("1.0"))]
    assert engine.snapshot_state().trade_sequence == 0


def test_marketable_limit_takes_up_to_its_price_then_rests() -> None:
    engine = engine_with_book()
    reports = engine.submit(limit("o1", BUY, "1.0", "100.5"), T0)
    # only 100 is at or below 100.5: 0.5 taken, 1.0 - 0.5 = 0.5 rests at 100.5
    assert kinds(reports) == [(ACCEPTED, None), (FILL, None)]
    assert fills(reports) == [("o1", D("0.5"), D("100"), TAKER)]
    # nothing displayed at 100.5 on the bid side: no queue ahead
    assert engine.open_orders() == [RestingState(limit("o1", BUY, "1.0", "100.5"), D("0.5"), queue_ahead=D("0"))]
    # the rest fills as maker at its own price when a print goes through it
    later = engine.on_trade(D("100.2"), D("2"), SELL, ms(1))
    assert fills(later) == [("o1", D("0.5"), D("100.5"), MAKER)]
    assert later[-1].leaves == 0


def test_ioc_remainder_is_canceled() -> None:
    engine = engine_with_book()
    reports = engine.submit(limit("o1", BUY, "1.0", "100", TimeInForce.IOC), T0)
    # 0.5 available at 100; 1.0 - 0.5 = 0.5 canceled
    assert fills(reports) == [("o1", D("0.5"), D("100"), TAKER)]
    assert (reports[-1].kind, reports[-1].leaves, reports[-1].reason) == (CANCELED, D("0.5"), "ioc_remainder")
    assert engine.open_orders() == []
    # an IOC that cannot trade at all is canceled whole
    untouched = engine.submit(limit("o2", SELL, "0.4", "99.5", TimeInForce.IOC), T0)
    assert kinds(untouched) == [(ACCEPTED, None), (CANCELED, "ioc_remainder")]
    assert untouched[-1].leaves == D("0.4")


def test_fok_not_fillable_takes_nothing() -> None:
    engine = engine_with_book()
    reports = engine.submit(limit("o1", BUY, "1.5", "101", TimeInForce.FOK), T0)
    # up to 101 only 0.5 + 0.7 = 1.2 < 1.5 is visible
    assert kinds(reports) == [(ACCEPTED, None), (CANCELED, "fok_not_fillable")]
    assert reports[-1].leaves == D("1.5")
    # nothing was consumed: 1.2 up to 101 fills entirely
    filled = engine.submit(limit("o2", BUY, "1.2", "101", TimeInForce.FOK), T0)
    assert fills(filled) == [("o2", D("0.5"), D("100"), TAKER), ("o2", D("0.7"), D("101"), TAKER)]
    # a FOK market order checks the whole visible side: 1.0 left at 102 < 1.1
    assert kinds(engine.submit(market("o3", BUY, "1.1", TimeInForce.FOK), T0))[-1] == (CANCELED, "fok_not_fillable")


def test_post_only_that_would_cross_is_rejected() -> None:
    engine = engine_with_book()
    reports = engine.submit(limit("o1", BUY, "1", "100", post_only=True), T0)
    assert kinds(reports) == [(REJECTED, "post_only_would_cross")]
    assert engine.open_orders() == []
    resting = engine.submit(limit("o2", BUY, "1", "99.5", post_only=True), T0)
    assert kinds(resting) == [(ACCEPTED, None)]
    assert [state.order.order_id for state in engine.open_orders()] == ["o2"]
    # post-only against the displayed best even where our own taking has used that level up
    engine.submit(market("o3", BUY, "0.5"), T0)
    assert kinds(engine.submit(limit("o4", BUY, "1", "100", post_only=True), T0)) == [
        (REJECTED, "post_only_would_cross")
    ]


# --- resting orders: maker fills -----------------------------------------------------------------------------


def test_resting_limit_fills_partly_from_a_small_print_then_from_a_later_one() -> None:
    engine = engine_with_book()
    assert kinds(engine.submit(limit("o1", BUY, "0.5", "99.5"), T0)) == [(ACCEPTED, None)]
    first = engine.on_trade(D("99.4"), D("0.2"), SELL, ms(1))
    # 99.4 < 99.5 is through our price: the 0.2 printed fills 0.2, leaves 0.5 - 0.2 = 0.3
    assert fills(first) == [("o1", D("0.2"), D("99.5"), MAKER)]
    assert first[-1].leaves == D("0.3")
    second = engine.on_trade(D("99.0"), D("1.0"), SELL, ms(2))
    # 1.0 printed, we need 0.3
    assert fills(second) == [("o1", D("0.3"), D("99.5"), MAKER)]
    assert second[-1].leaves == 0
    assert engine.open_orders() == []
    assert engine.on_trade(D("98.5"), D("1.0"), SELL, ms(3)) == []


def test_at_our_price_the_displayed_queue_trades_first() -> None:
    engine = engine_with_book()
    engine.submit(limit("o1", BUY, "0.5", "99"), T0)  # 1.0 displayed at 99 is ahead of us
    # 0.8 at 99 leaves 1.0 - 0.8 = 0.2 ahead, no fill
    assert engine.on_trade(D("99"), D("0.8"), SELL, ms(1)) == []
    # 0.5 at 99: 0.2 to the queue, 0.5 - 0.2 = 0.3 to us, leaves 0.2
    second = engine.on_trade(D("99"), D("0.5"), SELL, ms(2))
    assert fills(second) == [("o1", D("0.3"), D("99"), MAKER)]
    assert second[-1].leaves == D("0.2")
    # strictly through 99: no queue, 0.1 printed fills 0.1
    assert fills(engine.on_trade(D("98.9"), D("0.1"), SELL, ms(3))) == [("o1", D("0.1"), D("99"), MAKER)]


def test_the_queue_ahead_shrinks_with_the_displayed_level_but_never_grows() -> None:
    engine = engine_with_book()
    engine.submit(limit("o1", BUY, "0.5", "99"), T0)  # queue ahead 1.0
    engine.on_book_delta(BUY, D("99"), D("0.3"), ms(1))  # cancels ahead of us: queue min(1.0, 0.3) = 0.3
    engine.on_book_delta(BUY, D("99"), D("2.0"), ms(2))  # joiners queue behind us: still 0.3
    # 0.5 at 99: 0.3 to the queue, 0.5 - 0.3 = 0.2 to us
    assert fills(engine.on_trade(D("99"), D("0.5"), SELL, ms(3))) == [("o1", D("0.2"), D("99"), MAKER)]


def test_a_print_at_our_price_by_a_buyer_does_not_fill_our_bid() -> None:
    engine = engine_with_book()
    engine.submit(limit("o1", BUY, "0.5", "99.5"), T0)  # nothing displayed at 99.5: queue ahead 0
    assert engine.on_trade(D("99.5"), D("1"), BUY, ms(1)) == []
    assert fills(engine.on_trade(D("99.5"), D("1"), SELL, ms(2))) == [("o1", D("0.5"), D("99.5"), MAKER)]


def test_a_print_is_shared_by_price_then_time_priority() -> None:
    engine = engine_with_book()
    engine.submit(limit("o1", BUY, "0.4", "99.5"), T0)
    engine.submit(limit("o2", BUY, "0.3", "99.8"), ms(1))
    engine.submit(limit("o3", BUY, "0.4", "99.5"), ms(2))
    reports = engine.on_trade(D("99.4"), D("0.9"), SELL, ms(3))
    # best price first: o2 0.3 (0.9 - 0.3 = 0.6 left); then at 99.5 by time: o1 0.4 (0.2 left), o3 0.2
    assert fills(reports) == [
        ("o2", D("0.3"), D("99.8"), MAKER),
        ("o1", D("0.4"), D("99.5"), MAKER),
        ("o3", D("0.2"), D("99.5"), MAKER),
    ]
    assert [(s.order.order_id, s.leaves) for s in engine.open_orders()] == [("o3", D("0.2"))]


def test_the_book_moving_through_a_resting_order_fills_it_at_its_price() -> None:
    engine = engine_with_book()
    engine.submit(limit("o1", SELL, "0.4", "100.5"), T0)
    first = engine.on_book_snapshot(bids=[(D("101"), D("0.3"))], asks=[(D("102"), D("1"))], now=ms(1))
    # bids at or above 100.5: 0.3 at 101 -> 0.3 filled as maker at 100.5, leaves 0.4 - 0.3 = 0.1
    assert fills(first) == [("o1", D("0.3"), D("100.5"), MAKER)]
    # the 0.3 at 101 is used up; a new bid of 0.5 at 100.6 fills the last 0.1
    assert engine.on_book_delta(BUY, D("101"), D("0.3"), ms(2)) == []
    second = engine.on_book_delta(BUY, D("100.6"), D("0.5"), ms(3))
    assert fills(second) == [("o1", D("0.1"), D("100.5"), MAKER)]
    assert engine.open_orders() == []


# --- triggers ------------------------------------------------------------------------------------------------


def test_stop_loss_triggers_and_sells_at_market() -> None:
    engine = engine_with_book()
    order = SimOrder("s1", SELL, OrderType.STOP_LOSS, D("1.5"), trigger_price=D("99"))
    assert kinds(engine.submit(order, T0)) == [(ACCEPTED, None)]
    assert engine.on_trade(D("99.5"), D("1"), SELL, ms(1)) == []  # 99.5 > 99: not yet
    reports = engine.on_trade(D("98.9"), D("1"), SELL, ms(2))
    assert (reports[0].kind, reports[0].price) == (TRIGGERED, D("98.9"))
    # sells into the bids: 1.0 @ 99 + 0.5 @ 98 = 99 + 49 = 148 -> average 148 / 1.5 = 98.666...
    assert fills(reports) == [("s1", D("1.0"), D("99"), TAKER), ("s1", D("0.5"), D("98"), TAKER)]
    assert reports[-1].leaves == 0
    assert engine.open_orders() == []


def test_take_profit_and_buy_stops_trigger_in_their_direction() -> None:
    engine = engine_with_book()
    engine.submit(SimOrder("tp", SELL, OrderType.TAKE_PROFIT, D("0.4"), trigger_price=D("101")), T0)
    engine.submit(SimOrder("bs", BUY, OrderType.STOP_LOSS, D("0.3"), trigger_price=D("101.5")), T0)
    assert engine.on_trade(D("100.5"), D("1"), BUY, ms(1)) == []
    # 101 >= 101 fires the sell take-profit (inclusive), not the buy stop at 101.5
    at_101 = engine.on_trade(D("101"), D("1"), BUY, ms(2))
    assert [(r.kind, r.order_id) for r in at_101] == [(TRIGGERED, "tp"), (FILL, "tp")]
    assert fills(at_101) == [("tp", D("0.4"), D("99"), TAKER)]
    at_102 = engine.on_trade(D("102"), D("1"), BUY, ms(3))
    assert fills(at_102) == [("bs", D("0.3"), D("100"), TAKER)]


def test_stop_loss_limit_rests_at_its_limit_after_the_trigger() -> None:
    engine = engine_with_book()
    order = SimOrder("sl", SELL, OrderType.STOP_LOSS_LIMIT, D("1.5"), limit_price=D("98.5"), trigger_price=D("99.5"))
    engine.submit(order, T0)
    reports = engine.on_trade(D("99.4"), D("0.1"), SELL, ms(1))
    # as a sell limit at 98.5: takes 1.0 @ 99 (98 is below the limit), 1.5 - 1.0 = 0.5 rests at 98.5
    assert [r.kind for r in reports] == [TRIGGERED, FILL]
    assert fills(reports) == [("sl", D("1.0"), D("99"), TAKER)]
    assert engine.open_orders() == [RestingState(order, D("0.5"), triggered=True, queue_ahead=D("0"))]
    # 98.6 > 98.5 prints through the resting sell
    assert fills(engine.on_trade(D("98.6"), D("1"), BUY, ms(2))) == [("sl", D("0.5"), D("98.5"), MAKER)]


# --- latency -------------------------------------------------------------------------------------------------


def test_a_fill_can_beat_a_delayed_cancel() -> None:
    engine = engine_with_book(LatencyModel(cancel_delay=timedelta(milliseconds=50)))
    engine.submit(limit("o1", BUY, "0.5", "99.5"), T0)
    assert engine.cancel("o1", T0) == []  # takes effect at T0 + 50 ms
    filled = engine.on_trade(D("99"), D("1"), SELL, ms(10))
    assert fills(filled) == [("o1", D("0.5"), D("99.5"), MAKER)]
    late = engine.advance(ms(60))
    assert [(r.kind, r.reason, r.at) for r in late] == [(REJECTED, "unknown_order", ms(50))]


def test_a_delayed_cancel_beats_a_later_print() -> None:
    engine = engine_with_book(LatencyModel(cancel_delay=timedelta(milliseconds=50)))
    engine.submit(limit("o1", BUY, "0.5", "99.5"), T0)
    engine.cancel("o1", T0)
    reports = engine.on_trade(D("99"), D("1"), SELL, ms(60))  # the cancel (due 50 ms) goes first
    assert [(r.kind, r.reason, r.leaves, r.at) for r in reports] == [(CANCELED, "canceled", D("0.5"), ms(50))]


def test_a_delayed_submit_executes_against_the_book_of_its_due_time() -> None:
    engine = engine_with_book(LatencyModel(submit_delay=timedelta(milliseconds=20)))
    assert engine.submit(market("o1", BUY, "0.5"), T0) == []
    assert engine.advance(ms(19)) == []
    # the delta at 30 ms comes after the order took effect at 20 ms: the order saw 0.5 at 100
    reports = engine.on_book_delta(SELL, D("100"), D("0.2"), ms(30))
    assert [(r.kind, r.at) for r in reports] == [(ACCEPTED, ms(20)), (FILL, ms(20))]
    assert fills(reports) == [("o1", D("0.5"), D("100"), TAKER)]
    # 0.5 - 0.2 = 0.3 decrease reconciles our 0.5 to 0.2 consumed: free at 100 is 0.2 - 0.2 = 0
    engine.submit(market("o2", BUY, "0.1"), ms(40))
    assert fills(engine.advance(ms(60))) == [("o2", D("0.1"), D("101"), TAKER)]


# --- determinism, state, bad input ---------------------------------------------------------------------------


def run_session() -> list[ExecutionReport]:
    engine = engine_with_book(LatencyModel(submit_delay=timedelta(milliseconds=5)))
    reports = engine.submit(market("o1", BUY, "0.9"), T0)
    reports += engine.submit(limit("o2", BUY, "1", "99.5"), ms(1))
    reports += engine.submit(SimOrder("s1", SELL, OrderType.STOP_LOSS, D("0.5"), trigger_price=D("99.2")), ms(2))
    reports += engine.on_trade(D("99.4"), D("0.6"), SELL, ms(10))
    reports += engine.on_book_delta(SELL, D("99.6"), D("0.3"), ms(11))
    reports += engine.on_trade(D("99.1"), D("2"), SELL, ms(12))
    return reports


def test_the_same_inputs_give_identical_reports() -> None:
    first, second = run_session(), run_session()
    assert first == second
    # o1 takes 0.5 @ 100 + 0.4 @ 101; the 99.4 print fills o2 0.6 @ 99.5; the 99.6 ask is above o2's limit;
    # the 99.1 print fills the last 0.4 of o2 and fires s1, which sells 0.5 into the 99 bid
    assert [(r.trade_id, r.order_id, r.quantity, r.price) for r in first if r.kind is FILL] == [
        ("BTC/USD-1", "o1", D("0.5"), D("100")),
        ("BTC/USD-2", "o1", D("0.4"), D("101")),
        ("BTC/USD-3", "o2", D("0.6"), D("99.5")),
        ("BTC/USD-4", "o2", D("0.4"), D("99.5")),
        ("BTC/USD-5", "s1", D("0.5"), D("99")),
    ]


def test_a_crossed_snapshot_changes_nothing() -> None:
    engine = engine_with_book(LatencyModel(submit_delay=timedelta(milliseconds=5)))
    engine.submit(market("o1", BUY, "0.5"), T0)
    with pytest.raises(CrossedBook):
        engine.on_book_snapshot(bids=[(D("101"), D("1"))], asks=[(D("100"), D("1"))], now=ms(10))
    assert engine.book.best_ask == D("100")
    # the delayed submit was not carried out and lost: it still runs on the next call
    assert fills(engine.advance(ms(10))) == [("o1", D("0.5"), D("100"), TAKER)]


def test_state_round_trips_through_json_and_a_restored_engine_behaves_the_same() -> None:
    engine = engine_with_book(LatencyModel(cancel_delay=timedelta(milliseconds=50)))
    engine.submit(limit("o1", BUY, "1.0", "100.5"), T0)  # takes 0.5 @ 100 (trade 1), rests 0.5
    engine.submit(SimOrder("s1", SELL, OrderType.STOP_LOSS, D("0.2"), trigger_price=D("95")), T0)
    engine.submit(limit("o2", SELL, "0.3", "103"), T0)
    engine.cancel("o2", ms(1))  # due at 51 ms
    state = engine.snapshot_state()
    assert [(s.order.order_id, s.leaves) for s in state.orders] == [
        ("o1", D("0.5")),
        ("s1", D("0.2")),
        ("o2", D("0.3")),
    ]
    assert state.trade_sequence == 1
    adapter = TypeAdapter(EngineState)
    decoded = adapter.validate_json(adapter.dump_json(state))
    assert decoded == state

    restored = MatchingEngine("BTC/USD", LatencyModel(cancel_delay=timedelta(milliseconds=50)))
    restored.restore(decoded)
    assert restored.snapshot_state() == state
    for each in (engine, restored):  # the market comes back; asks above o1's 100.5 so nothing crosses
        assert each.on_book_snapshot(bids=BIDS, asks=ASKS[1:], now=ms(2)) == []
    events = [(D("100.4"), D("0.2"), ms(3)), (D("94"), D("1"), ms(60))]
    original = [r for price, qty, at in events for r in engine.on_trade(price, qty, SELL, at)]
    again = [r for price, qty, at in events for r in restored.on_trade(price, qty, SELL, at)]
    assert original == again
    # trade ids go on from the saved counter: 100.4 < 100.5 fills o1 0.2 (trade 2, 0.5 - 0.2 = 0.3 left);
    # at 60 ms the cancel of o2 (due 51 ms) goes first, the 94 print fills o1's last 0.3 (trade 3) and
    # fires s1 (94 <= 95), which sells 0.2 into the 99 bid (trade 4)
    assert [(r.kind, r.order_id, r.trade_id, r.quantity) for r in again if r.kind is not TRIGGERED] == [
        (FILL, "o1", "BTC/USD-2", D("0.2")),
        (CANCELED, "o2", None, None),
        (FILL, "o1", "BTC/USD-3", D("0.3")),
        (FILL, "s1", "BTC/USD-4", D("0.2")),
    ]


def test_restore_from_a_venue_s_own_records() -> None:
    stop = SimOrder("s1", SELL, OrderType.STOP_LOSS, D("1"), trigger_price=D("98.5"))
    stop_limit = SimOrder("s2", SELL, OrderType.STOP_LOSS_LIMIT, D("1"), limit_price=D("100.5"), trigger_price=D("99"))
    engine = engine_with_book()
    # an untouched stop waits for its trigger; a partly filled stop-limit has fired and rests at its limit
    engine.restore([RestingState(stop, D("1")), RestingState(stop_limit, D("0.4"))])
    assert fills(engine.on_trade(D("100.6"), D("1"), BUY, ms(1))) == [("s2", D("0.4"), D("100.5"), MAKER)]
    assert [r.kind for r in engine.on_trade(D("98.5"), D("1"), SELL, ms(2))] == [TRIGGERED, FILL]
    with pytest.raises(EngineStateError):
        engine.restore([RestingState(market("m1", BUY, "1"), D("1"))])
    with pytest.raises(EngineStateError):
        engine.restore([RestingState(limit("o1", BUY, "1", "99"), D("1.5"))])


@pytest.mark.parametrize(
    ("order", "reason"),
    [
        (SimOrder("x", BUY, OrderType.LIMIT, D("0"), D("99")), "invalid_quantity"),
        (SimOrder("x", BUY, OrderType.LIMIT, D("-1"), D("99")), "invalid_quantity"),
        (SimOrder("x", BUY, OrderType.LIMIT, D("1")), "invalid_price"),
        (SimOrder("x", BUY, OrderType.LIMIT, D("1"), D("0")), "invalid_price"),
        (SimOrder("x", BUY, OrderType.MARKET, D("1"), D("99")), "invalid_price"),
        (SimOrder("x", SELL, OrderType.STOP_LOSS, D("1")), "invalid_price"),
        (SimOrder("x", SELL, OrderType.LIMIT, D("1"), D("99"), trigger_price=D("98")), "invalid_price"),
        (SimOrder("x", BUY, OrderType.MARKET, D("1"), post_only=True), "post_only_not_allowed"),
        (limit("x", BUY, "1", "99", TimeInForce.IOC, post_only=True), "post_only_not_allowed"),
    ],
)
def test_malformed_orders_are_rejected(order: SimOrder, reason: str) -> None:
    engine = engine_with_book()
    assert kinds(engine.submit(order, T0)) == [(REJECTED, reason)]
    assert engine.open_orders() == []


def test_cancels_and_duplicate_ids() -> None:
    engine = engine_with_book()
    engine.submit(limit("o1", BUY, "0.5", "99"), T0)
    assert kinds(engine.submit(limit("o1", BUY, "0.1", "98"), T0)) == [(REJECTED, "duplicate_order_id")]
    engine.submit(SimOrder("s1", SELL, OrderType.STOP_LOSS, D("1"), trigger_price=D("90")), T0)
    assert [(r.kind, r.leaves) for r in engine.cancel("o1", ms(1))] == [(CANCELED, D("0.5"))]
    assert [(r.kind, r.leaves) for r in engine.cancel("s1", ms(1))] == [(CANCELED, D("1"))]
    assert kinds(engine.cancel("o1", ms(2))) == [(REJECTED, "unknown_order")]
    assert engine.on_trade(D("89"), D("5"), SELL, ms(3)) == []  # nothing left to fill or trigger


def test_invalid_trades_are_refused() -> None:
    engine = engine_with_book()
    with pytest.raises(InvalidTrade):
        engine.on_trade(D("100"), D("0"), SELL, T0)
    with pytest.raises(InvalidTrade):
        engine.on_trade(D("-1"), D("1"), SELL, T0)
