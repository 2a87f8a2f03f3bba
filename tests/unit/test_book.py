"""L2 order book: ordering, best prices, deltas and snapshot validation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal as D

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.domain.book import CrossedBook, InvalidLevel, MarketDataError, OrderBook
from shared.domain.types import OrderSide

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
BUY, SELL = OrderSide.BUY, OrderSide.SELL


def sample_book() -> OrderBook:
    book = OrderBook("BTC/USD")
    book.apply_snapshot(
        bids=[(D("98"), D("2.0")), (D("99"), D("1.0")), (D("97.5"), D("0.25"))],
        asks=[(D("102"), D("1.0")), (D("100"), D("0.5")), (D("101"), D("0.7"))],
        at=T0,
    )
    return book


def test_snapshot_orders_levels_best_first() -> None:
    book = sample_book()
    assert book.levels(BUY) == [(D("99"), D("1.0")), (D("98"), D("2.0")), (D("97.5"), D("0.25"))]
    assert book.levels(SELL) == [(D("100"), D("0.5")), (D("101"), D("0.7")), (D("102"), D("1.0"))]
    assert book.levels(SELL, depth=2) == [(D("100"), D("0.5")), (D("101"), D("0.7"))]
    assert book.levels(BUY, depth=0) == []
    assert book.updated_at == T0


def test_best_mid_and_spread() -> None:
    book = sample_book()
    assert (book.best_bid, book.best_ask) == (D("99"), D("100"))
    # mid = (99 + 100) / 2 = 99.5, spread = 100 - 99 = 1
    assert book.mid == D("99.5")
    assert book.spread == D("1")


def test_empty_book_has_no_prices() -> None:
    book = OrderBook("BTC/USD")
    assert (book.best_bid, book.best_ask, book.mid, book.spread) == (None, None, None, None)
    assert book.levels(BUY) == []
    assert book.updated_at is None


def test_deltas_add_replace_and_remove_levels() -> None:
    book = sample_book()
    later = T0 + timedelta(seconds=1)
    book.apply_delta(BUY, D("99.5"), D("0.3"), later)  # new best bid
    book.apply_delta(SELL, D("100"), D("0.2"), later)  # new total at an existing level, not an increment
    book.apply_delta(SELL, D("101"), D("0"), later)  # removed
    book.apply_delta(SELL, D("105"), D("0"), later)  # removing a missing level is a no-op
    assert book.best_bid == D("99.5")
    assert book.levels(SELL) == [(D("100"), D("0.2")), (D("102"), D("1.0"))]
    assert book.quantity_at(SELL, D("101")) == 0
    assert book.quantity_at(BUY, D("99.5")) == D("0.3")
    assert book.updated_at == later
    # spread = 100 - 99.5 = 0.5
    assert book.spread == D("0.5")


def test_a_crossed_snapshot_is_refused_and_the_book_kept() -> None:
    book = sample_book()
    with pytest.raises(CrossedBook) as raised:
        book.apply_snapshot(bids=[(D("101"), D("1"))], asks=[(D("100"), D("1"))], at=T0 + timedelta(seconds=1))
    assert raised.value.code == "crossed_book"
    assert (book.best_bid, book.best_ask, book.updated_at) == (D("99"), D("100"), T0)


def test_a_locked_snapshot_is_refused() -> None:
    with pytest.raises(CrossedBook):
        OrderBook("BTC/USD").apply_snapshot(bids=[(D("100"), D("1"))], asks=[(D("100"), D("2"))], at=T0)


def test_a_delta_may_cross_for_an_instant() -> None:
    # One venue message applied level by level: the new bid lands before the old ask goes.
    book = sample_book()
    book.apply_delta(BUY, D("100.5"), D("1"), T0)
    assert (book.best_bid, book.best_ask) == (D("100.5"), D("100"))
    book.apply_delta(SELL, D("100"), D("0"), T0)
    assert book.best_ask == D("101")


def test_zero_levels_in_a_snapshot_are_dropped() -> None:
    book = OrderBook("BTC/USD")
    book.apply_snapshot(bids=[(D("99"), D("0")), (D("98"), D("1"))], asks=[], at=T0)
    assert book.levels(BUY) == [(D("98"), D("1"))]
    assert book.best_ask is None


@pytest.mark.parametrize(
    ("price", "quantity"), [(D("0"), D("1")), (D("-1"), D("1")), (D("100"), D("-0.1")), (D("NaN"), D("1"))]
)
def test_invalid_levels_are_refused(price: D, quantity: D) -> None:
    book = sample_book()
    with pytest.raises(InvalidLevel) as raised:
        book.apply_delta(SELL, price, quantity, T0)
    assert isinstance(raised.value, MarketDataError)
    with pytest.raises(InvalidLevel):
        book.apply_snapshot(bids=[], asks=[(price, quantity)], at=T0)
    assert book.levels(SELL, depth=1) == [(D("100"), D("0.5"))]


def test_load_takes_over_another_book() -> None:
    book = sample_book()
    fresh = OrderBook("BTC/USD")
    fresh.apply_snapshot(bids=[(D("90"), D("1"))], asks=[(D("91"), D("2"))], at=T0 + timedelta(seconds=5))
    book.load(fresh)
    assert book.levels(BUY) == [(D("90"), D("1"))]
    assert book.levels(SELL) == [(D("91"), D("2"))]
    assert book.updated_at == T0 + timedelta(seconds=5)


prices = st.integers(min_value=1, max_value=60).map(lambda n: D(n) / 4)
quantities = st.integers(min_value=0, max_value=20).map(lambda n: D(n) / 10)


@given(st.lists(st.tuples(st.sampled_from([BUY, SELL]), prices, quantities), max_size=60))
def test_deltas_match_a_plain_dict_model(updates: list[tuple[OrderSide, D, D]]) -> None:
    book = OrderBook("BTC/USD")
    model: dict[OrderSide, dict[D, D]] = {BUY: {}, SELL: {}}
    for side, price, quantity in updates:
        book.apply_delta(side, price, quantity, T0)
        if quantity:
            model[side][price] = quantity
        else:
            model[side].pop(price, None)
    assert book.levels(BUY) == sorted(model[BUY].items(), reverse=True)
    assert book.levels(SELL) == sorted(model[SELL].items())
    assert book.best_bid == max(model[BUY], default=None)
    assert book.best_ask == min(model[SELL], default=None)
    assert dict(book.bids) == model[BUY]
    assert dict(book.asks) == model[SELL]
