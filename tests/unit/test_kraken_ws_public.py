"""The Kraken v2 public client against the protocol fake on a real loopback WebSocket: subscriptions, validated
books and trades, and the faults (corrupted checksum, malformed and unknown frames, disconnect, silence)."""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from shared.marketdata import BookDelta, BookSnapshot, MarketData, Trade
from shared.venues.kraken.ws_public import FeedOptions, KrakenPublicFeed
from tests.fakes.kraken_ws import KrakenWsFake
from tests.helpers import eventually

WAIT_S = 15.0


class Collected:
    """What the client handed on, per symbol, with a local copy of each book rebuilt from snapshots and deltas."""

    def __init__(self) -> None:
        self.messages: list[MarketData] = []
        self.books: dict[str, tuple[dict[object, object], dict[object, object]]] = {}
        self.changed = asyncio.Event()

    async def __call__(self, message: MarketData) -> None:
        self.messages.append(message)
        if isinstance(message, BookSnapshot):
            self.books[message.symbol] = (
                {level.price: level.qty for level in message.bids},
                {level.price: level.qty for level in message.asks},
            )
        elif isinstance(message, BookDelta):
            bids, asks = self.books[message.symbol]
            for side, levels in ((bids, message.bids), (asks, message.asks)):
                for level in levels:
                    if level.qty == 0:
                        side.pop(level.price, None)
                    else:
                        side[level.price] = level.qty
        self.changed.set()

    def count(self, kind: type[MarketData], symbol: str | None = None) -> int:
        return sum(isinstance(m, kind) and (symbol is None or m.symbol == symbol) for m in self.messages)

    async def until(self, condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(WAIT_S):
            while not condition():
                self.changed.clear()
                await self.changed.wait()


@asynccontextmanager
async def running(fake: KrakenWsFake, **options: float) -> AsyncIterator[tuple[KrakenPublicFeed, Collected]]:
    collected = Collected()
    feed = KrakenPublicFeed(
        ["BTC/USD", "ETH/USD"],
        collected,
        FeedOptions(url=fake.url, initial_backoff_s=0.05, max_backoff_s=0.2, **options),  # type: ignore[arg-type]
        rng=random.Random(1),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:
        yield feed, collected
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)


def local_matches_venue(fake: KrakenWsFake, feed: KrakenPublicFeed, collected: Collected, symbol: str) -> bool:
    """The book rebuilt from what was published equals the client's validated book."""
    book = feed.books.get(symbol)
    return book is not None and book.synced and collected.books.get(symbol) == (dict(book.bids()), dict(book.asks()))


async def test_books_and_trades_stream_validated_in_order() -> None:
    async with KrakenWsFake() as fake, running(fake) as (feed, collected):
        await collected.until(lambda: collected.count(BookDelta, "ETH/USD") >= 50 and collected.count(Trade) >= 5)
        assert fake.subscriptions[0] == ("instrument", "")  # precisions first, then the markets
        assert {("subscribe:book", "BTC/USD"), ("subscribe:trade", "ETH/USD")} <= set(fake.subscriptions)
        assert collected.count(BookSnapshot, "BTC/USD") == 1
        assert feed.stats.faults == {}
        assert local_matches_venue(fake, feed, collected, "BTC/USD")
        sequences = [m.sequence for m in collected.messages if not isinstance(m, Trade) and m.symbol == "BTC/USD"]
        assert sequences == list(range(len(sequences)))
        assert all(m.venue == "kraken" for m in collected.messages)


async def test_a_corrupted_checksum_drops_the_book_and_resubscribes() -> None:
    async with KrakenWsFake() as fake, running(fake) as (feed, collected):
        await collected.until(lambda: collected.count(BookDelta, "BTC/USD") >= 10)
        published_before = collected.count(BookDelta, "BTC/USD")
        fake.corrupt_next_checksum("BTC/USD")
        await collected.until(lambda: collected.count(BookSnapshot, "BTC/USD") == 2)
        assert feed.stats.faults == {"checksum_mismatch": 1}
        assert ("unsubscribe:book", "BTC/USD") in fake.subscriptions
        assert collected.count(BookDelta, "BTC/USD") >= published_before  # nothing was unpublished ...
        await collected.until(lambda: collected.count(BookDelta, "BTC/USD") >= published_before + 10)
        assert local_matches_venue(fake, feed, collected, "BTC/USD")  # ... and the resynced book is right
        assert collected.count(BookSnapshot, "ETH/USD") == 1  # the other symbol was untouched


async def test_malformed_and_unknown_frames_are_counted_and_skipped() -> None:
    async with KrakenWsFake() as fake, running(fake) as (feed, collected):
        await collected.until(lambda: collected.count(BookDelta) >= 5)
        for frame in (
            '{"channel":"book","type":"update","data":[{"symbol":"BTC/USD","bids":[{"price":"x"}]}]}',
            "not json",
            "[1,2]",
            '{"channel":"ohlc","type":"update","data":[]}',
        ):
            await fake.send_raw(frame)
        await collected.until(lambda: feed.stats.faults.get("malformed", 0) == 3 and "unknown" in feed.stats.faults)
        seen = collected.count(BookDelta)
        await collected.until(lambda: collected.count(BookDelta) >= seen + 10)
        assert feed.stats.connections == 1
        assert local_matches_venue(fake, feed, collected, "ETH/USD")


async def test_a_disconnect_reconnects_and_subscribes_again() -> None:
    async with KrakenWsFake() as fake, running(fake) as (feed, collected):
        await collected.until(lambda: collected.count(BookDelta) >= 5)
        await fake.disconnect_all()
        await collected.until(lambda: collected.count(BookSnapshot, "BTC/USD") == 2)
        assert feed.stats.connections == 2
        assert fake.connections == 2
        assert [s for s in fake.subscriptions if s[0] == "instrument"] == [("instrument", ""), ("instrument", "")]
        await collected.until(lambda: collected.count(BookDelta, "BTC/USD") >= 20)
        assert local_matches_venue(fake, feed, collected, "BTC/USD")


async def test_silence_past_the_idle_timeout_reconnects() -> None:
    async with KrakenWsFake() as fake, running(fake, idle_timeout_s=0.5) as (feed, collected):
        await collected.until(lambda: collected.count(BookDelta) >= 5)
        fake.set_silent(True)
        await collected.until(lambda: fake.connections >= 2)
        assert feed.stats.faults.get("idle_timeout", 0) >= 1
        fake.set_silent(False)
        await collected.until(lambda: collected.count(BookSnapshot, "BTC/USD") >= 2)


async def test_a_venue_down_at_start_is_retried_until_it_answers() -> None:
    with socket.socket() as probe:  # a loopback port nobody listens on (yet)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    collected = Collected()
    options = FeedOptions(url=f"ws://127.0.0.1:{port}/v2", initial_backoff_s=0.02, max_backoff_s=0.1)
    feed = KrakenPublicFeed(["BTC/USD"], collected, options, rng=random.Random(2))
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    try:

        async def refused_thrice() -> bool:
            return feed.stats.faults.get("disconnect", 0) >= 3

        await eventually(refused_thrice, timeout_s=WAIT_S, message="three refused connects")
        assert collected.messages == []
        async with KrakenWsFake(port=port):
            await collected.until(lambda: collected.count(BookDelta, "BTC/USD") >= 3)
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT_S)
    assert feed.stats.connections == 1


def test_backoff_is_jittered_and_capped() -> None:
    feed = KrakenPublicFeed(
        ["BTC/USD"], Collected(), FeedOptions(initial_backoff_s=1, max_backoff_s=8), rng=random.Random(3)
    )
    delays = [feed.backoff_s(failures) for failures in (1, 2, 3, 4, 10, 10, 10)]
    assert all(0 <= d <= c for d, c in zip(delays, [1, 2, 4, 8, 8, 8, 8], strict=True))
    assert len(set(delays)) == len(delays)  # jittered, not a fixed schedule


def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="depth"):
        KrakenPublicFeed(["BTC/USD"], Collected(), FeedOptions(depth=15))
    with pytest.raises(ValueError, match="symbols"):
        KrakenPublicFeed([], Collected())
