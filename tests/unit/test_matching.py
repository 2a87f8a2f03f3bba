"""Matching engine with hand-computed expectations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest

from shared.domain.book import CrossedBook
from shared.domain.matching import ExecutionReport, LatencyModel, MatchingEngine, ReportKind, SimOrder
from shared.domain.types import Liquidity, OrderSide, OrderType, TimeInForce

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def engine_with_book(latency: LatencyModel | None = None) -> MatchingEngine:
    engine = MatchingEngine("BTC/USD", latency)
    engine.on_book_snapshot(
        bids=[(D("99"), D("1.0")), (D("98"), D("2.0"))],
        asks=[(D("100"), D("0.5")), (D("101"), D("0.7")), (D("102"), D("1.0"))],
        now=T0,
    )
    return engine


def fills(reports: list[ExecutionReport]) -> list[tuple[D, D, Liquidity]]:
    return [(r.quantity, r.price, r.liquidity) for r in reports if r.kind is ReportKind.FILL]  # type: ignore[misc]


def test_market_buy_walks_three_levels() -> None:
    engine = engine_with_book()
    reports = engine.submit(SimOrder("o1", BUY, OrderType.MARKET, D("1.5")), T0)
    # 0.5 @ 100 + 0.7 @ 101 + 0.3 @ 102 = 50 + 70.7 + 30.6 = 151.3 -> average 151.3 / 1.5 = 100.8666...
    assert fills(reports) == [
        (D("0.5"), D("100"), Liquidity.TAKER),
        (D("0.7"), D("101"), Liquidity.TAKER),
        (D("0.3"), D("102"), Liquidity.TAKER),
    ]
    assert sum(q * p for q, p, _ in fills(reports)) == D("151.3")
    assert reports[-1].leaves == 0


def test_market_order_beyond_visible_depth_cancels_the_rest() -> None:
    engine = engine_with_book()
    reports = engine.submit(SimOrder("o1", BUY, OrderType.MARKET, D("3")), T0)
    # visible asks: 0.5 + 0.7 + 1.0 = 2.2, so 0.8 is canceled
    assert sum(q for q, _, _ in fills(reports)) == D("2.2")
    assert reports[-1].kind is ReportKind.CANCELED
    assert (reports[-1].leaves, reports[-1].reason) == (D("0.8"), "no_liquidity")


def test_consumed_liquidity_is_not_taken_twice() -> None:
    engine = engine_with_book()
    engine.submit(SimOrder("o1", BUY, OrderType.MARKET, D("0.5")), T0)
    second = engine.submit(SimOrder("o2", BUY, OrderType.MARKET, D("0.5")), T0)
    assert fills(second) == [(D("0.5"), D("101"), Liquidity.TAKER)]
    engine.on_book_delta(SELL, D("100"), D("0.4"), T0)  # the venue refreshes the level
    third = engine.submit(SimOrder("o3", BUY, OrderType.MARKET, D("0.4")), T0)
    assert fills(third) == [(D("0.4"), D("100"), Liquidity.TAKER)]


def test_marketable_limit_takes_then_rests_and_fills_as_maker_from_trades() -> None:
    engine = engine_with_book()
    reports = engine.submit(SimOrder("o1", BUY, OrderType.LIMIT, D("1.0"), limit_price=D("100")), T0)
    assert fills(reports) == [(D("0.5"), D("100"), Liquidity.TAKER)]
    assert [r.kind for r in reports] == [ReportKind.ACCEPTED, ReportKind.FILL]
    # resting 0.5 @ 100; a 0.2 trade through at 99.5 fills 0.2, a later 1.0 trade fills the last 0.3
    first = engine.on_trade(D("99.5"), D("0.2"), SELL, T0 + timedelta(seconds=1))
    assert fills(first) == [(D("0.2"), D("100"), Liquidity.MAKER)]
    second = engine.on_trade(D("99.0"), D("1.0"), SELL, T0 + timedelta(seconds=2))
    assert fills(second) == [(D("0.3"), D("100"), Liquidity.MAKER)]
    assert second[-1].leaves == 0
    assert engine.open_orders() == []


def test_at_our_price_the_displayed_queue_trades_first() -> None:
    engine = engine_with_book()
    engine.submit(SimOrder("o1", BUY, OrderType.LIMIT, D("0.5"), limit_price=D("99")), T0)
    # 1.0 was displayed at 99 before us: a 0.8 print at 99 leaves us unfilled, the next 0.5 fills 0.3
    assert fills(engine.on_trade(D("99"), D("0.8"), SELL, T0)) == []
    assert fills(engine.on_trade(D("99"), D("0.5"), SELL, T0)) == [(D("0.3"), D("99"), Liquidity.MAKER)]


def test_post_only_that_would_cross_is_rejected() -> None:
    engine = engine_with_book()
    reports = engine.submit(SimOrder("o1", BUY, OrderType.LIMIT, D("1"), limit_price=D("100"), post_only=True), T0)
    assert [(r.kind, r.reason) for r in reports] == [(ReportKind.REJECTED, "post_only_would_cross")]
    resting = engine.submit(SimOrder("o2", BUY, OrderType.LIMIT, D("1"), limit_price=D("99.5"), post_only=True), T0)
    assert [r.kind for r in resting] == [ReportKind.ACCEPTED]


def test_ioc_remainder_is_canceled() -> None:
    engine = engine_with_book()
    order = SimOrder("o1", BUY, OrderType.LIMIT, D("1.0"), limit_price=D("100"), time_in_force=TimeInForce.IOC)
    reports = engine.submit(order, T0)
    assert fills(reports) == [(D("0.5"), D("100"), Liquidity.TAKER)]
    assert (reports[-1].kind, reports[-1].leaves, reports[-1].reason) == (
        ReportKind.CANCELED,
        D("0.5"),
        "ioc_remainder",
    )


def test_fok_not_fillable_takes_nothing() -> None:
    engine = engine_with_book()
    order = SimOrder("o1", BUY, OrderType.LIMIT, D("1.5"), limit_price=D("101"), time_in_force=TimeInForce.FOK)
    reports = engine.submit(order, T0)
    # up to 101 only 0.5 + 0.7 = 1.2 is visible
    assert fills(reports) == []
    assert reports[-1].reason == "fok_not_fillable"


def test_stop_loss_triggers_and_sells_at_market() -> None:
    engine = engine_with_book()
    engine.submit(SimOrder("s1", SELL, OrderType.STOP_LOSS, D("1.5"), trigger_price=D("99")), T0)
    assert engine.on_trade(D("99.5"), D("1"), SELL, T0) == []
    reports = engine.on_trade(D("98.9"), D("1"), SELL, T0)
    assert reports[0].kind is ReportKind.TRIGGERED
    # sells into the bids: 1.0 @ 99 + 0.5 @ 98
    assert fills(reports) == [(D("1.0"), D("99"), Liquidity.TAKER), (D("0.5"), D("98"), Liquidity.TAKER)]


def test_book_moving_through_a_resting_order_fills_it_at_its_price() -> None:
    engine = engine_with_book()
    engine.submit(SimOrder("o1", SELL, OrderType.LIMIT, D("0.4"), limit_price=D("100.5")), T0)
    reports = engine.on_book_snapshot(bids=[(D("101"), D("0.3"))], asks=[(D("102"), D("1"))], now=T0)
    assert fills(reports) == [(D("0.3"), D("100.5"), Liquidity.MAKER)]


def test_a_fill_can_beat_a_delayed_cancel() -> None:
    engine = engine_with_book(LatencyModel(submit_delay=timedelta(0), cancel_delay=timedelta(milliseconds=50)))
    engine.submit(SimOrder("o1", BUY, OrderType.LIMIT, D("0.5"), limit_price=D("99.5")), T0)
    assert engine.cancel("o1", T0) == []
    filled = engine.on_trade(D("99"), D("1"), SELL, T0 + timedelta(milliseconds=10))
    assert fills(filled) == [(D("0.5"), D("99.5"), Liquidity.MAKER)]
    late = engine.advance(T0 + timedelta(milliseconds=60))
    assert [(r.kind, r.reason) for r in late] == [(ReportKind.REJECTED, "unknown_order")]


def test_same_inputs_give_identical_reports() -> None:
    def run() -> list[ExecutionReport]:
        engine = engine_with_book()
        reports = engine.submit(SimOrder("o1", BUY, OrderType.MARKET, D("0.9")), T0)
        reports += engine.submit(SimOrder("o2", BUY, OrderType.LIMIT, D("1"), limit_price=D("99.5")), T0)
        reports += engine.on_trade(D("99.4"), D("0.6"), SELL, T0)
        return reports

    assert run() == run()
    assert [r.trade_id for r in run() if r.trade_id] == ["BTC/USD-1", "BTC/USD-2", "BTC/USD-3"]


def test_crossed_snapshot_is_refused_and_the_book_kept() -> None:
    engine = engine_with_book()
    with pytest.raises(CrossedBook):
        engine.on_book_snapshot(bids=[(D("101"), D("1"))], asks=[(D("100"), D("1"))], now=T0)
    assert engine.book.best_ask == D("100")


def test_restore_puts_resting_orders_back() -> None:
    engine = engine_with_book()
    engine.submit(SimOrder("o1", BUY, OrderType.LIMIT, D("0.5"), limit_price=D("95")), T0)
    saved = engine.open_orders()
    restarted = engine_with_book()
    restarted.restore(saved)
    assert fills(restarted.on_trade(D("94"), D("1"), SELL, T0)) == [(D("0.5"), D("95"), Liquidity.MAKER)]
