"""The paper venue as users trade on it: books and trades published on Kafka, fed in by the OMS's paper feed.

`paper_market` gives a test its own pair of market-data topics (so no other test's prints reach its
venue); `tests.kit.oms.paper_oms` starts the OMS on those topics with the paper venue it builds itself
(`venue=None`, as `make up` runs it). `PaperMarket.publish_book` / `publish_trade` return once the venue has applied
the message: the feed writes Redis only after the venue took it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from shared.clock import utc_now
from shared.events import EventProducer
from shared.marketdata import BookSnapshot, Trade, to_envelope
from shared.venues.paper_feed import BOOK_DEPTH, book_key, trade_key
from tests.helpers import eventually
from tests.kit.controls import Controls, open_controls
from tests.kit.factories import ASKS, BIDS, SYMBOL, Levels, book_snapshot, trade

REPUBLISH_EVERY_S = 1.0


@dataclass
class PaperMarket:
    """Publishes market data on a test's own topics and waits until the paper venue has applied it."""

    producer: EventProducer
    redis: Redis
    book_topic: str
    trade_topic: str
    controls: Controls  # this test's controls topics, the risk and hitl defaults published

    @property
    def topics(self) -> dict[str, str]:
        """The OMS settings that point its paper feed at this market (and its controls at this test's topics)."""
        return {
            "marketdata_book_topic": self.book_topic,
            "marketdata_trade_topic": self.trade_topic,
            **self.controls.settings,
        }

    async def publish_book(
        self, bids: Levels = BIDS, asks: Levels = ASKS, *, symbol: str = SYMBOL, timeout_s: float = 20.0
    ) -> BookSnapshot:
        """Publish a whole book; return once the venue has it (the feed caches it in Redis after applying)."""
        snapshot = book_snapshot(symbol, bids, asks)
        sent_at = utc_now()
        expected = _levels(bids), _levels(asks)

        async def applied() -> bool:
            raw = await self.redis.get(book_key(symbol))
            if raw is None:
                return False
            cached = json.loads(raw)
            updated_at = cached.get("updated_at")  # tests that write the key by hand leave it out
            fresh = updated_at is not None and datetime.fromisoformat(updated_at) >= sent_at
            return fresh and (_levels_of(cached["bids"]), _levels_of(cached["asks"])) == expected

        # The feed starts at the end of its topics: a book sent before it was assigned is never read, so
        # send again until it lands (a repeated snapshot replaces the book with the same book).
        await self._send_until(self.book_topic, snapshot, applied, timeout_s, f"book of {symbol} at the venue")
        return snapshot

    async def publish_trade(
        self, price: str, qty: str = "0.01", *, side: str = "sell", symbol: str = SYMBOL, timeout_s: float = 20.0
    ) -> Trade:
        """Publish one public trade print; return once the venue has applied it (its fills included)."""
        print_ = trade(price, qty, side=side, symbol=symbol)

        async def applied() -> bool:
            raw = await self.redis.get(trade_key(symbol))
            return raw is not None and json.loads(raw)["trade_id"] == print_.trade_id

        # A trade is sent once: a second copy would fill resting orders twice.
        await self.producer.send(self.trade_topic, to_envelope(print_, "test"), key=symbol)
        await eventually(applied, timeout_s=timeout_s, message=f"trade {print_.trade_id} at the venue")
        return print_

    async def _send_until(self, topic: str, message: BookSnapshot, applied: Any, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.producer.send(topic, to_envelope(message, "test"), key=message.symbol)
            resend_at = time.monotonic() + REPUBLISH_EVERY_S
            while time.monotonic() < resend_at:
                if await applied():
                    return
                await asyncio.sleep(0.05)
            if time.monotonic() > deadline:
                raise AssertionError(f"{what} within {timeout_s}s")


def _levels(levels: Levels) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(price), Decimal(qty)) for price, qty in levels][:BOOK_DEPTH]


def _levels_of(cached: Sequence[dict[str, str]]) -> list[tuple[Decimal, Decimal]]:
    return [(Decimal(level["price"]), Decimal(level["qty"])) for level in cached]


async def create_topics(bootstrap: str, names: Sequence[str]) -> None:
    """Create `names` (one partition each) so that a consumer started next is assigned at once."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1) for name in names])
    finally:
        await admin.close()


@asynccontextmanager
async def open_paper_market(redis_url: str, kafka_bootstrap: str) -> AsyncIterator[PaperMarket]:
    """A market on fresh topics (for fixtures wider than one test; a test takes `paper_market`)."""
    run = uuid.uuid4().hex[:12]
    book_topic, trade_topic = f"test.{run}.book-events.v1", f"test.{run}.trade-events.v1"
    await create_topics(kafka_bootstrap, (book_topic, trade_topic))
    producer = EventProducer(kafka_bootstrap, client_id="test-paper-market")
    await producer.start()
    redis = Redis.from_url(redis_url)
    try:
        async with open_controls(kafka_bootstrap) as controls:
            yield PaperMarket(producer, redis, book_topic, trade_topic, controls)
    finally:
        await producer.stop()
        await redis.aclose()


@pytest.fixture
async def paper_market(redis_url: str, kafka_bootstrap: str) -> AsyncIterator[PaperMarket]:
    """This test's market-data topics and a producer on them."""
    async with open_paper_market(redis_url, kafka_bootstrap) as market:
        yield market
