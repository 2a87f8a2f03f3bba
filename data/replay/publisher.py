"""Publishes market-data messages to Kafka at a chosen speed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from shared.events.producer import EventProducer
from shared.marketdata import MarketData, to_envelope, topic_for

Sleep = Callable[[float], Awaitable[None]]


@dataclass
class ReplayStats:
    published: int = 0
    books: int = 0
    trades: int = 0


async def replay(
    messages: Iterable[MarketData],
    producer: EventProducer,
    *,
    speed: float,
    limit: int | None = None,
    topic_prefix: str = "",
    sleep: Sleep = asyncio.sleep,
    on_progress: Callable[[ReplayStats], None] | None = None,
) -> ReplayStats:
    """Publish in order; `speed` 1.0 keeps the messages' own pacing, 2.0 twice as fast, 0 as fast as possible."""
    stats = ReplayStats()
    previous: datetime | None = None
    for message in messages:
        if limit is not None and stats.published >= limit:
            break
        if speed > 0 and previous is not None:
            gap_s = (message.timestamp - previous).total_seconds() / speed
            if gap_s > 0:
                await sleep(gap_s)
        previous = message.timestamp
        await producer.send(topic_prefix + topic_for(message), to_envelope(message, "feed-replay"), key=message.symbol)
        stats.published += 1
        if topic_for(message).endswith("trade-events.v1"):
            stats.trades += 1
        else:
            stats.books += 1
        if on_progress is not None and stats.published % 100 == 0:
            on_progress(stats)
    return stats
