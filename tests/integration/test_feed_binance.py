"""The Binance public feed against its loopback fake: the local book procedure over a real WebSocket and REST.

Shown: the book is published only once synced (snapshot + buffered diffs), follows every diff exactly, a gap in
update ids drops it, is counted and resynced from a new snapshot; trades carry the aggressor's side; malformed and
unknown frames are counted and skipped; a dropped connection reconnects and resyncs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal

import pytest

from shared.domain.types import OrderSide
from shared.marketdata import BookSnapshot, MarketData, Trade
from shared.venues.binance.ws_public import BinancePublicFeed, FeedOptions
from tests.fakes.binance_ws import BinanceMarketFake
from tests.helpers import eventually

SYMBOL = "BTCUSDT"


@dataclass
class Running:
    fake: BinanceMarketFake
    feed: BinancePublicFeed
    heard: list[MarketData]

    def books(self) -> list[BookSnapshot]:
        return [m for m in self.heard if isinstance(m, BookSnapshot)]

    def expected_top(self) -> tuple[list[tuple[Decimal, Decimal]], list[tuple[Decimal, Decimal]]]:
        book = self.fake.book(SYMBOL)
        bids = sorted(((Decimal(p), Decimal(q)) for p, q in book.bids.items()), reverse=True)[:10]
        asks = sorted((Decimal(p), Decimal(q)) for p, q in book.asks.items())[:10]
        return bids, asks

    async def in_step(self) -> None:
        """Wait until the last published book is the fake's book at its current update id."""

        async def matches() -> bool:
            books = self.books()
            if not books or books[-1].sequence != self.fake.book(SYMBOL).update_id:
                return False
            last = books[-1]
            return ([(lv.price, lv.qty) for lv in last.bids], [(lv.price, lv.qty) for lv in last.asks]) == (
                self.expected_top()
            )

        await eventually(matches, timeout_s=10, message="the published book matches the venue's")


@pytest.fixture
async def running() -> AsyncIterator[Running]:
    async with BinanceMarketFake().serve() as fake:
        fake.book(SYMBOL).bids.update({"100.00": "1.5", "99.50": "2"})
        fake.book(SYMBOL).asks.update({"100.50": "1", "101.00": "3"})
        heard: list[MarketData] = []

        async def sink(message: MarketData) -> None:
            heard.append(message)

        options = FeedOptions(url=fake.url, rest_url=fake.rest_url, idle_timeout_s=5, initial_backoff_s=0.05)
        feed = BinancePublicFeed(["BTC/USDT"], sink, options)
        stop = asyncio.Event()
        task = asyncio.create_task(feed.run(stop))
        try:
            await eventually(lambda: _true(bool(fake.connections)), timeout_s=10, message="the feed connected")
            yield Running(fake, feed, heard)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(task, timeout=10)


async def _true(value: bool) -> bool:
    return value


async def test_the_book_syncs_from_snapshot_and_diffs_and_follows_every_update(running: Running) -> None:
    fake = running.fake
    await fake.move(SYMBOL, {"100.00": "1.6"}, {})  # buffered; triggers the snapshot
    await running.in_step()
    for i in range(20):
        await fake.move(SYMBOL, {f"{99 - i}.00": "1"}, {"100.50": "0" if i % 2 else "2"}, ids=1 + i % 3)
    await running.in_step()
    assert running.books()[-1].symbol == "BTC/USDT"
    assert running.feed.stats.snapshots == 1
    assert running.feed.stats.faults == {}


async def test_a_gap_is_counted_and_resynced_from_a_new_snapshot(running: Running) -> None:
    fake = running.fake
    await fake.move(SYMBOL, {"100.00": "1.6"}, {})
    await running.in_step()
    published = len(running.books())

    fake.gap(SYMBOL)
    await fake.move(SYMBOL, {"99.00": "4"}, {})  # its U is 4 past the book: dropped, snapshot again
    await running.in_step()

    assert running.feed.stats.faults["gap"] == 1
    assert running.feed.stats.snapshots == 2
    assert fake.snapshots_served == 2
    assert all(b.sequence != fake.book(SYMBOL).update_id - 1 for b in running.books()[published:])


async def test_trades_malformed_and_unknown_frames(running: Running) -> None:
    fake = running.fake
    await fake.print_trade(SYMBOL, "100.10", "0.25", buyer_maker=True)
    await fake.send_raw("{not json")
    await fake.send_raw('{"stream": "x", "data": {"e": "kline"}}')
    await fake.send_raw('{"stream": "btcusdt@depth@100ms", "data": {"e": "depthUpdate", "s": "BTCUSDT", "U": 9}}')
    await fake.print_trade(SYMBOL, "100.20", "0.5", buyer_maker=False)

    async def two_trades() -> bool:
        return len([m for m in running.heard if isinstance(m, Trade)]) == 2

    await eventually(two_trades, timeout_s=10, message="both trades handed on")
    trades = [m for m in running.heard if isinstance(m, Trade)]
    assert [(t.price, t.side) for t in trades] == [
        (Decimal("100.10"), OrderSide.SELL),
        (Decimal("100.20"), OrderSide.BUY),
    ]
    assert running.feed.stats.faults == {"malformed": 2, "unknown": 1}


async def test_a_dropped_connection_reconnects_and_resyncs(running: Running) -> None:
    fake = running.fake
    await fake.move(SYMBOL, {"100.00": "1.6"}, {})
    await running.in_step()

    await fake.drop()
    await eventually(lambda: _true(running.feed.stats.connections == 2 and bool(fake.connections)), timeout_s=10)
    await fake.move(SYMBOL, {"100.00": "0"}, {"101.00": "0"})
    await running.in_step()

    assert running.feed.stats.faults["disconnect"] == 1
    assert running.feed.stats.snapshots == 2
