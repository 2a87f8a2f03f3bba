"""Batch (polars) and streaming features agree bit for bit on a seeded SYNTHETIC day, and the definitions compute
what docs/features.md says on hand-checked inputs."""

from __future__ import annotations

import itertools
import os
import struct
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import polars as pl
import pytest

from data.features import batch
from data.features.definitions import (
    BAR_US,
    FEATURES,
    BookRow,
    BookTracker,
    FeatureInputError,
    TradeRow,
    ofi_contribution,
    to_us,
    trade_row,
)
from data.features.stream import FeatureBar, FeatureStream
from data.replay.source import SyntheticMarket
from shared.domain.types import OrderSide
from shared.marketdata import BookSnapshot, Level, MarketData, Trade

DAY_START = datetime(2026, 1, 1, tzinfo=UTC)
# A full day at one step per 20 s by default; AETHER_SCALE=20 (nightly) makes it one step per second.
STEP_S = 20.0 / max(1, min(20, int(os.environ.get("AETHER_SCALE", "1"))))


def synthetic_day(symbol: str, seed: int) -> list[MarketData]:
    """Every message of one SYNTHETIC day (seeded random walk, not real data) of `symbol`."""
    market = SyntheticMarket(symbol=symbol, seed=seed, start_at=DAY_START, step_s=STEP_S)
    end = DAY_START + timedelta(days=1)
    return list(itertools.takewhile(lambda message: message.timestamp < end, market.messages()))


def batch_inputs(messages: list[MarketData]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The stored form of the messages: every trade, every book state (as the sink would keep them)."""
    trades: list[TradeRow] = []
    books: list[BookRow] = []
    trackers: dict[str, BookTracker] = {}
    for message in messages:
        if isinstance(message, Trade):
            trades.append(trade_row(message))
        else:
            row = trackers.setdefault(message.symbol, BookTracker()).apply(message)
            if row is not None:
                books.append(row)
    return batch.trades_frame(trades), batch.books_frame(books)


def streamed(messages: list[MarketData]) -> list[FeatureBar]:
    stream = FeatureStream()
    bars = [bar for message in messages for bar in stream.on_message(message)]
    return bars + stream.flush()


def _bits(value: float | None) -> bytes | None:
    return None if value is None else struct.pack("<d", value)  # tells -0.0 from 0.0, unlike ==


def test_a_synthetic_day_gives_zero_differing_values() -> None:
    # Two symbols interleaved by time, as the topics deliver them.
    messages = sorted(
        synthetic_day("BTC/USD", seed=21) + synthetic_day("ETH/USD", seed=22),
        key=lambda message: message.timestamp,
    )
    from_stream = sorted(streamed(messages), key=lambda bar: (bar.venue, bar.symbol, bar.bar_us))
    from_batch = batch.compute(*batch_inputs(messages)).to_dicts()

    assert len(from_batch) == len(from_stream) == 2 * 1440
    differing = [
        (row["symbol"], row["bar_us"], name, row[name], bar.values[name])
        for row, bar in zip(from_batch, from_stream, strict=True)
        for name in FEATURES
        if (row["symbol"], row["bar_us"]) != (bar.symbol, bar.bar_us) or _bits(row[name]) != _bits(bar.values[name])
    ]
    assert differing == []
    # Every feature is computed (not null everywhere), so the comparison compares numbers.
    for name in FEATURES:
        assert sum(row[name] is not None for row in from_batch) > 1000, name


def _trade(trade_id: str, price: str, qty: str, side: OrderSide, second: int) -> Trade:
    return Trade(
        venue="synthetic",
        symbol="BTC/USD",
        trade_id=trade_id,
        price=Decimal(price),
        qty=Decimal(qty),
        side=side,
        timestamp=DAY_START + timedelta(seconds=second),
    )


def _book(bid: str, bid_qty: str, ask: str, ask_qty: str, second: int) -> BookSnapshot:
    return BookSnapshot(
        venue="synthetic",
        symbol="BTC/USD",
        bids=[Level(price=Decimal(bid), qty=Decimal(bid_qty))],
        asks=[Level(price=Decimal(ask), qty=Decimal(ask_qty))],
        timestamp=DAY_START + timedelta(seconds=second),
        sequence=second,
    )


def test_hand_checked_bar() -> None:
    messages: list[MarketData] = [
        _book("99", "1", "101", "3", 0),
        _trade("a", "100", "2", OrderSide.BUY, 10),
        _trade("b", "110", "1", OrderSide.SELL, 20),
        _book("100", "2", "101", "1", 30),  # bid up (+2), ask same (-1 + 3): e = 4
        _book("100", "1", "102", "1", 90),  # next bar: closes the first
    ]
    stream = FeatureStream()
    first = [bar for message in messages for bar in stream.on_message(message)]
    assert len(first) == 1
    values = first[0].values
    assert values["volume"] == 3.0
    assert values["signed_volume"] == 1.0
    assert values["vwap"] == 310 / 3
    assert values["vwap_deviation"] == (110 - 310 / 3) / (310 / 3)
    assert values["trade_intensity"] == 2 / 60
    assert values["mid"] == 100.5
    assert values["spread"] == 1.0
    assert values["depth_imbalance"] == (2 - 1) / 3
    assert values["ofi"] == 4.0
    assert values["rv_5"] is None  # not five returns yet
    second = stream.flush()[0].values
    assert second["mid"] == 101.0
    assert second["vwap"] is None
    assert second["amihud"] is None
    assert second["ofi"] == 0.0  # bid same: +1 - 2; ask up: + 1
    frame = batch.compute(*batch_inputs(messages)).to_dicts()
    assert [row["ofi"] for row in frame] == [4.0, second["ofi"]]


def test_ofi_follows_cont_kukanov_stoikov() -> None:
    before = BookRow("v", "S/U", 0, bid=100.0, ask=101.0, bid_qty=5, ask_qty=7, bid_depth=5, ask_depth=7)
    bid_up = BookRow("v", "S/U", 1, bid=100.5, ask=101.0, bid_qty=2, ask_qty=7, bid_depth=2, ask_depth=7)
    ask_down = BookRow("v", "S/U", 1, bid=100.0, ask=100.5, bid_qty=5, ask_qty=3, bid_depth=5, ask_depth=3)
    assert ofi_contribution(None, before) == 0
    assert ofi_contribution(before, bid_up) == 2 + (-7 + 7)  # a new better bid adds its quantity
    assert ofi_contribution(before, ask_down) == (5 - 5) - 3  # a new better ask takes its quantity away


def test_inexact_quantity_is_refused() -> None:
    trade = _trade("a", "100", "0.000000001", OrderSide.BUY, 0)
    with pytest.raises(FeatureInputError, match="more than 8 decimals"):
        trade_row(trade)


def test_late_message_is_counted_not_folded() -> None:
    stream = FeatureStream()
    stream.on_message(_trade("a", "100", "1", OrderSide.BUY, 70))
    assert stream.on_message(_trade("b", "100", "1", OrderSide.BUY, 10)) == []
    assert stream.late == 1
    (bar,) = stream.flush()
    assert bar.bar_us == to_us(DAY_START) + BAR_US
    assert bar.values["volume"] == 1.0


def test_grace_keeps_a_bar_open_for_messages_of_the_other_topic() -> None:
    on_time: list[MarketData] = [
        _book("99", "1", "101", "1", 0),
        _trade("a", "100", "1", OrderSide.BUY, 59),
        _book("99", "2", "101", "1", 61),
        _trade("b", "100", "2", OrderSide.SELL, 63),
    ]
    # The trade of second 59 arrives after the book of second 61 (the trade topic lagging by 2 s).
    arrived = [on_time[0], on_time[2], on_time[1], on_time[3]]
    stream = FeatureStream(grace_us=5_000_000)
    assert [bar for message in arrived for bar in stream.on_message(message)] == []
    late = stream.on_message(_trade("c", "100", "1", OrderSide.BUY, 66))  # watermark past 60 s + 5 s: bar 0 closes
    assert [bar.bar_us for bar in late] == [to_us(DAY_START)]
    assert late[0].values["volume"] == 1.0  # the lagging trade is in its bar
    assert stream.on_message(_trade("d", "100", "1", OrderSide.BUY, 30)) == []  # now bar 0 is closed: late
    assert stream.late == 1
    bars = late + stream.flush()
    frame = batch.compute(*batch_inputs([*on_time, _trade("c", "100", "1", OrderSide.BUY, 66)])).to_dicts()
    assert [[_bits(row[name]) for name in FEATURES] for row in frame] == [
        [_bits(bar.values[name]) for name in FEATURES] for bar in bars
    ]
