"""The Coinbase level2 book and the public feed on a real loopback WebSocket (the protocol fake): snapshots and
updates published as the platform's messages, a sequence gap detected, counted and resynced from a fresh snapshot."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal

import pytest

from shared.domain.types import OrderSide, Symbol
from shared.marketdata import BookDelta, BookSnapshot, MarketData, Trade
from shared.venues.coinbase.book import CrossedBook, Level2Book, SequenceGap, SequenceTracker
from shared.venues.coinbase.ws_public import CoinbasePublicFeed, FeedOptions
from shared.venues.coinbase.ws_wire import L2Update
from tests.fakes.coinbase import CoinbaseFake

WAIT_S = 15.0
BTC = Symbol("BTC/USD")


def test_updates_set_absolute_sizes_and_zero_removes() -> None:
    book = Level2Book("BTC/USD")
    book.apply_snapshot([L2Update("bid", Decimal(100), Decimal(1)), L2Update("offer", Decimal(101), Decimal(2))])
    book.apply_update([L2Update("bid", Decimal(100), Decimal("0.5")), L2Update("offer", Decimal(101), Decimal(0))])
    book.apply_update([L2Update("offer", Decimal(102), Decimal(3))])
    assert book.top(10) == ([(Decimal(100), Decimal("0.5"))], [(Decimal(102), Decimal(3))])


def test_a_crossed_book_is_refused() -> None:
    book = Level2Book("BTC/USD")
    book.apply_snapshot([L2Update("bid", Decimal(100), Decimal(1)), L2Update("offer", Decimal(101), Decimal(2))])
    with pytest.raises(CrossedBook):
        book.apply_update([L2Update("bid", Decimal(101), Decimal(1))])


def test_the_tracker_finds_a_gap_and_ignores_repeats() -> None:
    tracker = SequenceTracker()
    assert [tracker.expect(n) for n in (0, 1, 2, 2)] == [True, True, True, False]
    with pytest.raises(SequenceGap) as gap:
        tracker.expect(4)
    assert (gap.value.expected, gap.value.got) == (3, 4)


class Collected:
    """What the feed handed on, with the book rebuilt from its snapshots and deltas."""

    def __init__(self) -> None:
        self.messages: list[MarketData] = []
        self.book: tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]] = ({}, {})
        self.changed = asyncio.Event()

    async def __call__(self, message: MarketData) -> None:
        self.messages.append(message)
        if isinstance(message, BookSnapshot):
            self.book = ({lv.price: lv.qty for lv in message.bids}, {lv.price: lv.qty for lv in message.asks})
        elif isinstance(message, BookDelta):
            for side, levels in ((self.book[0], message.bids), (self.book[1], message.asks)):
                for level in levels:
                    if level.qty == 0:
                        side.pop(level.price, None)
                    else:
                        side[level.price] = level.qty
        self.changed.set()

    def count(self, kind: type[MarketData]) -> int:
        return sum(isinstance(m, kind) for m in self.messages)

    async def until(self, condition: object) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():  # type: ignore[operator]
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def running() -> AsyncIterator[tuple[CoinbaseFake, CoinbasePublicFeed, Collected]]:
    fake = CoinbaseFake(None)
    async with fake.serve():
        await fake.publish_book(BTC, [("100", "1"), ("99", "2")], [("101", "1"), ("102", "3")])
        collected = Collected()
        options = FeedOptions(url=fake.ws_url, initial_backoff_s=0.05, max_backoff_s=0.2, depth=2)
        feed = CoinbasePublicFeed(["BTC/USD"], collected, options, rng=random.Random(1))
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        try:
            yield fake, feed, collected
        finally:
            stop.set()
            await asyncio.wait_for(task, WAIT_S)


def _levels(*pairs: tuple[str, str]) -> dict[Decimal, Decimal]:
    return {Decimal(p): Decimal(q) for p, q in pairs}


async def test_snapshot_then_updates_rebuild_the_venue_book_in_aether_symbols() -> None:
    async with running() as (fake, feed, collected):
        await collected.until(lambda: collected.count(BookSnapshot) == 1)
        await fake.publish_book(BTC, [("100", "1.5"), ("98", "4")], [("101", "1"), ("102", "3")])
        await collected.until(lambda: collected.count(BookDelta) == 1)

        assert collected.book == (_levels(("100", "1.5"), ("98", "4")), _levels(("101", "1"), ("102", "3")))
        assert {m.symbol for m in collected.messages} == {"BTC/USD"}
        assert [m.sequence for m in collected.messages if not isinstance(m, Trade)] == [0, 1]
        assert feed.stats.faults == {}  # every frame (subscriptions included) decoded and in sequence


async def test_a_level_falling_out_of_the_depth_is_removed_from_what_is_published() -> None:
    async with running() as (fake, _feed, collected):
        await collected.until(lambda: collected.count(BookSnapshot) == 1)
        await fake.publish_book(BTC, [("100", "1"), ("99", "2")], [("100.5", "1"), ("101", "1"), ("102", "3")])
        await collected.until(lambda: collected.count(BookDelta) == 1)
        assert collected.book[1] == _levels(("100.5", "1"), ("101", "1"))  # 102 left the depth of 2


async def test_a_sequence_gap_is_counted_and_the_book_resynced_from_a_fresh_snapshot() -> None:
    async with running() as (fake, feed, collected):
        await collected.until(lambda: collected.count(BookSnapshot) == 1)
        fake.gap_next()
        await fake.publish_book(BTC, [("100", "7")], [("101", "1")])  # lost in the gap: arrives with a skip

        await collected.until(lambda: collected.count(BookSnapshot) == 2)

        assert feed.stats.faults.get("sequence_gap") == 1
        assert feed.stats.resyncs == 1
        assert feed.stats.connections == 2
        assert collected.book == (_levels(("100", "7")), _levels(("101", "1")))  # the venue's book, not a guess
        assert collected.count(BookDelta) == 0  # the gapped update was never applied


async def test_trades_are_published_with_the_aggressor_side() -> None:
    async with running() as (fake, _feed, collected):
        await collected.until(lambda: collected.count(BookSnapshot) == 1)
        await fake.publish_trade(BTC, "101", "0.25", OrderSide.BUY)
        await collected.until(lambda: collected.count(Trade) == 1)
        (trade,) = [m for m in collected.messages if isinstance(m, Trade)]
        assert (trade.symbol, trade.price, trade.qty, trade.side) == ("BTC/USD", Decimal(101), Decimal("0.25"), "buy")


async def test_a_dropped_connection_reconnects_and_resubscribes() -> None:
    async with running() as (fake, feed, collected):
        await collected.until(lambda: collected.count(BookSnapshot) == 1)
        await fake.drop_connections()
        await collected.until(lambda: collected.count(BookSnapshot) == 2)
        assert feed.stats.connections == 2
