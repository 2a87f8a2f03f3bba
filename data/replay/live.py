"""Live market data onto the `marketdata.*` topics: a venue's public feed (Kraken WebSocket v2, Binance streams,
Coinbase level2), published with the replay's records (same envelope, key = symbol, same topics) and the replay's retry-until-acknowledged batches.

The venue client hands each validated message to `LivePublisher.sink` (a bounded queue: when Kafka is down the
client waits instead of piling up memory); the publisher sends whatever is queued as one batch, in order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

from data.replay.publisher import BatchPublisher, ReplayTopics, outgoing_record, publish_until_acknowledged
from shared.marketdata import MarketData, Trade
from shared.observability.correlation import new_correlation_id
from shared.venues.binance.ws_public import BinancePublicFeed
from shared.venues.binance.ws_public import FeedOptions as BinanceFeedOptions
from shared.venues.coinbase.ws_public import CoinbasePublicFeed
from shared.venues.coinbase.ws_public import FeedOptions as CoinbaseFeedOptions
from shared.venues.kraken.ws_public import FeedOptions, KrakenPublicFeed

KRAKEN_PRODUCER_NAME = "feed-kraken"
BINANCE_PRODUCER_NAME = "feed-binance"
COINBASE_PRODUCER_NAME = "feed-coinbase"
QUEUE_SIZE = 10_000


@dataclass(frozen=True, slots=True)
class LiveReport:
    """What a live feed published so far."""

    published: int = 0
    books: int = 0
    trades: int = 0


class LivePublisher:
    """Queued market data to Kafka in batches, in arrival order."""

    def __init__(
        self,
        producer: BatchPublisher,
        topics: ReplayTopics,
        *,
        producer_name: str,
        stop: asyncio.Event,
        batch_size: int = 500,
        retry_backoff_s: float = 0.5,
        max_backoff_s: float = 10.0,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.producer_name = producer_name
        self.stop = stop
        self.batch_size = batch_size
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.correlation_id = new_correlation_id()
        self.queue: asyncio.Queue[MarketData] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self.report = LiveReport()

    async def sink(self, message: MarketData) -> None:
        """Queue one message (waits while the queue is full, unless stopped: then the message is dropped)."""
        if not self.queue.full():
            self.queue.put_nowait(message)
            return
        putter = asyncio.ensure_future(self.queue.put(message))
        stopper = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait({putter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        for task in (putter, stopper):
            task.cancel()
        await asyncio.gather(putter, stopper, return_exceptions=True)

    async def run(self) -> LiveReport:
        """Publish queued messages until stopped (what is still queued then is dropped: live data goes stale)."""
        stop = self.stop
        stopper = asyncio.ensure_future(stop.wait())
        try:
            while not stop.is_set():
                getter = asyncio.ensure_future(self.queue.get())
                await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await getter
                    break
                batch = [getter.result()]
                while len(batch) < self.batch_size and not self.queue.empty():
                    batch.append(self.queue.get_nowait())
                if not await self._publish(batch):
                    break
        finally:
            stopper.cancel()
        return self.report

    async def _publish(self, batch: Sequence[MarketData]) -> bool:
        records = [outgoing_record(m, self.topics, self.producer_name, self.correlation_id) for m in batch]
        if not await publish_until_acknowledged(
            self.producer, records, self.stop, initial_s=self.retry_backoff_s, max_s=self.max_backoff_s
        ):
            return False
        trades = sum(isinstance(message, Trade) for message in batch)
        self.report = LiveReport(
            published=self.report.published + len(batch),
            books=self.report.books + len(batch) - trades,
            trades=self.report.trades + trades,
        )
        return True


async def run_kraken(
    symbols: Sequence[str], producer: BatchPublisher, topics: ReplayTopics, options: FeedOptions, stop: asyncio.Event
) -> tuple[LiveReport, KrakenPublicFeed]:
    """Kraken's public feed of `symbols` onto the topics until `stop` is set."""
    publisher = LivePublisher(producer, topics, producer_name=KRAKEN_PRODUCER_NAME, stop=stop)
    feed = KrakenPublicFeed(symbols, publisher.sink, options)
    await asyncio.gather(feed.run(stop), publisher.run())
    return publisher.report, feed


async def run_binance(
    symbols: Sequence[str],
    producer: BatchPublisher,
    topics: ReplayTopics,
    options: BinanceFeedOptions,
    stop: asyncio.Event,
) -> tuple[LiveReport, BinancePublicFeed]:
    """Binance's public feed of `symbols` (local books kept by the snapshot + diff procedure) until `stop` is set."""
    publisher = LivePublisher(producer, topics, producer_name=BINANCE_PRODUCER_NAME, stop=stop)
    feed = BinancePublicFeed(symbols, publisher.sink, options)
    await asyncio.gather(feed.run(stop), publisher.run())
    return publisher.report, feed


async def run_coinbase(
    symbols: Sequence[str],
    producer: BatchPublisher,
    topics: ReplayTopics,
    options: CoinbaseFeedOptions,
    stop: asyncio.Event,
) -> tuple[LiveReport, CoinbasePublicFeed]:
    """Coinbase's public feed of `symbols` (Aether's BTC/USD form) onto the topics until `stop` is set."""
    publisher = LivePublisher(producer, topics, producer_name=COINBASE_PRODUCER_NAME, stop=stop)
    feed = CoinbasePublicFeed(symbols, publisher.sink, options)
    await asyncio.gather(feed.run(stop), publisher.run())
    return publisher.report, feed
