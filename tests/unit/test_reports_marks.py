"""Marks of the reports service (services/reports/service.py): book mid first, the last trade only without a book."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from services.reports.service import BOOK_MID, LAST_TRADE, ReadModelWriter, minute_of
from shared.domain.types import OrderSide
from shared.marketdata import BookDelta, BookSnapshot, Level, Trade

T0 = datetime(2026, 1, 5, 8, 0, 30, 123_000, tzinfo=UTC)
SYMBOL = "BTC/USD"


def _levels(*pairs: tuple[str, str]) -> list[Level]:
    return [Level(price=Decimal(price), qty=Decimal(qty)) for price, qty in pairs]


def _delta(bids: list[Level], asks: list[Level], seconds: int) -> BookDelta:
    return BookDelta(
        venue="kraken", symbol=SYMBOL, bids=bids, asks=asks, timestamp=T0 + timedelta(seconds=seconds), sequence=seconds
    )


def _trade(price: str) -> Trade:
    return Trade(
        venue="kraken", symbol=SYMBOL, trade_id=price, price=Decimal(price), qty=Decimal(1), side=OrderSide.BUY,
        timestamp=T0,
    )  # fmt: skip


def test_a_trade_marks_only_until_a_book_is_seen_and_deltas_need_their_snapshot() -> None:
    writer = ReadModelWriter()
    assert writer.mark_for(_delta(_levels(("100", "1")), [], 1)) is None  # no snapshot yet: nothing to apply to
    trade_mark = writer.mark_for(_trade("101"))
    assert trade_mark is not None
    assert (trade_mark.price, trade_mark.source) == (Decimal(101), LAST_TRADE)

    snapshot = BookSnapshot(
        venue="kraken", symbol=SYMBOL, bids=_levels(("99", "1")), asks=_levels(("101", "2")), timestamp=T0, sequence=1
    )
    mark = writer.mark_for(snapshot)
    assert mark is not None
    assert (mark.price, mark.source, mark.observed_at) == (Decimal(100), BOOK_MID, T0)
    assert writer.mark_for(_trade("150")) is None  # the book wins over the tape

    moved = _delta(_levels(("99", "0"), ("100", "1")), _levels(("101", "0"), ("103", "1")), 2)
    first = writer.mark_for(moved)
    again = writer.mark_for(moved)  # a redelivered delta: absolute levels, same book
    assert first is not None
    assert again is not None
    assert first.price == again.price == Decimal("101.5")


def test_a_book_with_one_side_or_crossed_sets_no_mark() -> None:
    writer = ReadModelWriter()
    one_sided = BookSnapshot(
        venue="kraken", symbol=SYMBOL, bids=_levels(("99", "1")), asks=[], timestamp=T0, sequence=1
    )
    assert writer.mark_for(one_sided) is None
    assert writer.mark_for(_delta([], _levels(("101", "1")), 1)) is not None
    assert writer.mark_for(_delta(_levels(("102", "1")), [], 2)) is None  # crossed for an instant


def test_marks_are_kept_per_minute() -> None:
    assert minute_of(T0) == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
