"""Market data from Kafka into the paper venue, and the latest book and trade into Redis.

Market data is not exactly-once business data: a plain consumer without a group (every process
reads every partition) starts at the end of the topics and the latest state wins; nothing is
committed. Each batch is applied to the venue in order, then the final top of book and the last
trade per symbol are written to Redis (`marketdata:book:{symbol}`, `marketdata:trade:{symbol}`,
JSON with decimal strings). A record whose event id was among the last `RECENT_EVENT_IDS` is skipped:
the replay sends a batch again after a broker outage, and a trade printed twice would fill twice.
A broker outage is ridden out by the Kafka client (it reconnects and fetches on from its position).
"""

from __future__ import annotations

import asyncio
import ssl
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

from shared.contracts.mirror import encode_mirror
from shared.domain.types import Symbol
from shared.events.envelope import Envelope, MessageDecodeError
from shared.marketdata import (
    BOOK_TOPIC,
    TRADE_TOPIC,
    BookDelta,
    BookSnapshot,
    MarketDataError,
    Trade,
    decode_marketdata,
)
from shared.mirror_keys import latest_trade_key
from shared.observability.logging import get_logger
from shared.venues.base import VenueFill
from shared.venues.latest_book import BOOK_DEPTH, BOOK_KEY, book_json, book_key, latest_book_value
from shared.venues.paper import PaperVenue

log = get_logger(__name__)

__all__ = [
    "BOOK_DEPTH",
    "BOOK_KEY",
    "TRADE_KEY",
    "FeedStats",
    "PaperFeed",
    "book_json",
    "book_key",
    "trade_json",
    "trade_key",
]

TRADE_KEY = latest_trade_key("{symbol}")
RECENT_EVENT_IDS = 10_000


def trade_key(symbol: str) -> str:
    """The Redis key of a symbol's last public trade."""
    return latest_trade_key(symbol)


def trade_json(trade: Trade) -> str:
    """The Redis value of a public trade (the `Trade` contract as JSON with decimal strings)."""
    return encode_mirror(trade)


@dataclass
class FeedStats:
    """What the feed has done since it started."""

    applied: int = 0
    undecodable: int = 0
    failed: int = 0
    fills: int = 0
    duplicates: int = 0


class PaperFeed:
    """Consumes the market-data topics into a `PaperVenue` and Redis."""

    def __init__(
        self,
        venue: PaperVenue,
        *,
        redis: Redis,
        bootstrap: str,
        book_topic: str = BOOK_TOPIC,
        trade_topic: str = TRADE_TOPIC,
        client_id: str = "paper-feed",
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        start_from: Literal["latest", "earliest"] = "latest",
        depth: int = BOOK_DEPTH,
        poll_timeout_ms: int = 200,
        max_poll_records: int = 500,
    ) -> None:
        self.venue = venue
        self.redis = redis
        self.topics = (book_topic, trade_topic)
        self.depth = depth
        self.stats = FeedStats()
        self.ready = asyncio.Event()
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": client_id,
            "group_id": None,
            "enable_auto_commit": False,
            "auto_offset_reset": start_from,
            "security_protocol": security_protocol,
            "ssl_context": ssl_context,
            # Discover topics created after start (a replay started later) within seconds, not minutes.
            "metadata_max_age_ms": 5_000,
        }
        self._poll_timeout_ms = poll_timeout_ms
        self._max_poll_records = max_poll_records
        self._consumer: AIOKafkaConsumer | None = None
        # Insertion-ordered: the oldest id is evicted first.
        self._recent_event_ids: dict[uuid.UUID, None] = {}

    async def start(self, ready_timeout_s: float = 10.0) -> None:
        """Connect and subscribe; `ready` is set once partitions are assigned and their positions known."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(*self.topics, **self._options)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer
        await self._resolve_positions(consumer, ready_timeout_s)

    async def stop(self) -> None:
        """Disconnect."""
        consumer, self._consumer = self._consumer, None
        self.ready.clear()
        if consumer is not None:
            await consumer.stop()

    async def run(self, stop_event: asyncio.Event) -> None:
        """Apply market data until `stop_event` is set."""
        await self.start()
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("PaperFeed.start() did not connect")
        try:
            while not stop_event.is_set():
                batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._max_poll_records)
                if not self.ready.is_set() and consumer.assignment():
                    self.ready.set()
                for records in batches.values():
                    await self.handle_records(records)
        finally:
            await self.stop()

    async def handle_records(self, records: Sequence[Any]) -> None:
        """Apply Kafka records in order, then publish the latest book/trade of each touched symbol to Redis."""
        books: set[Symbol] = set()
        trades: dict[Symbol, Trade] = {}
        for record in records:
            message = self._decode(record)
            if message is None:
                continue
            symbol = Symbol(message.symbol)
            if await self._apply(message):
                if isinstance(message, Trade):
                    trades[symbol] = message
                else:
                    books.add(symbol)
        await self._publish(books, trades)

    async def _apply(self, message: BookSnapshot | BookDelta | Trade) -> bool:
        try:
            if isinstance(message, BookSnapshot):
                updates = await self.venue.on_book_snapshot(message)
            elif isinstance(message, BookDelta):
                updates = await self.venue.on_book_delta(message)
            else:
                updates = await self.venue.on_trade(message)
        except Exception as exc:  # one bad message or a storage hiccup must not stop the market
            self.stats.failed += 1
            log.error("paper_feed_apply_failed", symbol=message.symbol, error_type=type(exc).__name__, error=str(exc))
            return False
        self.stats.applied += 1
        self.stats.fills += sum(1 for update in updates if isinstance(update, VenueFill))
        return True

    async def _publish(self, books: set[Symbol], trades: dict[Symbol, Trade]) -> None:
        if not books and not trades:
            return
        pipe = self.redis.pipeline(transaction=False)
        for symbol in sorted(books):
            book = self.venue.book(symbol)
            if book is not None and book.updated_at is not None:
                pipe.set(book_key(symbol), encode_mirror(latest_book_value(book, self.depth)))
        for symbol, trade in trades.items():
            pipe.set(trade_key(symbol), encode_mirror(trade))
        try:
            await pipe.execute()
        except Exception as exc:  # Redis is a cache of the latest state: the next batch writes it again
            log.error("paper_feed_redis_failed", error_type=type(exc).__name__, error=str(exc))

    def _decode(self, record: Any) -> BookSnapshot | BookDelta | Trade | None:
        try:
            envelope = Envelope.from_bytes(record.value)
            message = decode_marketdata(envelope)
        except (MessageDecodeError, MarketDataError) as exc:
            self.stats.undecodable += 1
            log.warning("paper_feed_undecodable", topic=record.topic, offset=record.offset, error=str(exc)[:300])
            return None
        if not self._first_sight(envelope.event_id):
            self.stats.duplicates += 1
            return None
        return message

    def _first_sight(self, event_id: uuid.UUID) -> bool:
        if event_id in self._recent_event_ids:
            return False
        self._recent_event_ids[event_id] = None
        if len(self._recent_event_ids) > RECENT_EVENT_IDS:
            del self._recent_event_ids[next(iter(self._recent_event_ids))]
        return True

    async def _resolve_positions(self, consumer: AIOKafkaConsumer, timeout_s: float) -> None:
        # Without a group the assignment follows metadata; resolving positions now means a message
        # published after `ready` is never skipped by a late "latest" lookup.
        deadline = time.monotonic() + timeout_s
        while not consumer.assignment():
            if time.monotonic() > deadline:
                log.warning("paper_feed_no_partitions_yet", topics=list(self.topics))
                return
            await asyncio.sleep(0.05)
        for partition in consumer.assignment():
            await consumer.position(partition)
        self.ready.set()
