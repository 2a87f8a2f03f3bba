"""Issue 14, item 1: the books the sink keeps from deltas, and when it stores one (interval, gaps, crossed books)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from data.ingest.sink import BookKeeper, Crossed
from shared.marketdata import BookDelta, BookSnapshot, Level
from tests.kit.marketdata import NOW


def _level(price: str, qty: str) -> Level:
    return Level(price=Decimal(price), qty=Decimal(qty))


def _snapshot() -> BookSnapshot:
    return BookSnapshot(
        venue="kraken",
        symbol="BTC/USD",
        bids=[_level("100", "1"), _level("99", "2"), _level("98", "3")],
        asks=[_level("101", "1"), _level("102", "2")],
        timestamp=NOW,
        sequence=1,
    )


def _delta(sequence: int, seconds: int, bids: list[Level] | None = None, asks: list[Level] | None = None) -> BookDelta:
    return BookDelta(
        venue="kraken",
        symbol="BTC/USD",
        bids=bids or [],
        asks=asks or [],
        timestamp=NOW + timedelta(seconds=seconds),
        sequence=sequence,
    )


def test_a_snapshot_is_stored_cut_to_depth_and_deltas_store_the_book_once_per_interval() -> None:
    books = BookKeeper(timedelta(seconds=10), depth=2)
    stored = books.on_snapshot(_snapshot())
    assert (stored.reason, [lv.price for lv in stored.bids]) == ("snapshot", [Decimal(100), Decimal(99)])
    assert books.on_delta(_delta(2, 5, bids=[_level("100", "0")])) is None  # within the interval
    due = books.on_delta(_delta(3, 10, asks=[_level("101.5", "4")]))
    assert due is not None
    assert due.reason == "interval"
    assert [(lv.price, lv.qty) for lv in due.bids] == [(Decimal(99), Decimal(2)), (Decimal(98), Decimal(3))]
    assert [(lv.price, lv.qty) for lv in due.asks] == [(Decimal(101), Decimal(1)), (Decimal("101.5"), Decimal(4))]


def test_a_sequence_gap_or_a_crossed_book_stops_interval_snapshots_until_the_next_feed_snapshot() -> None:
    books = BookKeeper(timedelta(seconds=1), depth=5)
    books.on_snapshot(_snapshot())
    assert books.on_delta(_delta(3, 5)) is None  # sequence 2 is missing
    assert books.on_delta(_delta(4, 6)) is None  # still invalid
    books.on_snapshot(_snapshot().model_copy(update={"sequence": 10}))
    crossed = books.on_delta(_delta(11, 20, bids=[_level("101", "1")]))  # bid 101 >= ask 101
    assert crossed == Crossed("crossed book: best bid 101 >= best ask 101")
    assert books.on_delta(_delta(12, 30)) is None  # the episode is reported once: the book stays invalid
    books.reset()
    assert books.on_delta(_delta(13, 40)) is None  # nothing known after a reset
