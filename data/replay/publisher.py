"""Publishes market-data messages to Kafka, paced by their own timestamps at a chosen speed.

Each message goes out in the platform envelope (producer `feed-replay`, aggregate id = key = symbol)
on the book or trade topic. Messages that are due together are sent as one batch through the
idempotent producer, which keeps their order per partition, so one symbol's messages arrive in order.
A batch the broker does not acknowledge (Kafka down or restarting) is sent again, with exponential backoff,
until it goes through or the replay is stopped: the outage is logged once, and the replay then resumes where
it was. A batch sent again keeps its event ids, so a record the broker had already stored before the failure
arrives twice with one event id (consumers drop the repeat, see `shared.venues.paper_feed`).
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from data.replay.source import MarketDataSource, looped, rebased
from shared.events.producer import BROKER_UNAVAILABLE_ERRORS, Delivery, OutgoingMessage
from shared.events.retry import RetryStopped, attempts_until_stopped
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC, MarketData, Trade, to_envelope
from shared.observability.correlation import new_correlation_id
from shared.observability.logging import get_logger

log = get_logger(__name__)

PRODUCER_NAME = "feed-replay"
Sleep = Callable[[float], Awaitable[None]]
Clock = Callable[[], float]


class BatchPublisher(Protocol):
    async def publish_batch(self, messages: Sequence[OutgoingMessage]) -> Sequence[Delivery]:
        """Publish records in order per partition and wait for every acknowledgement."""
        ...


@dataclass(frozen=True, slots=True)
class ReplayTopics:
    """Where book and trade messages go (tests use a unique prefix)."""

    book: str = BOOK_TOPIC
    trade: str = TRADE_TOPIC

    @classmethod
    def with_prefix(cls, prefix: str) -> ReplayTopics:
        """The default topic names behind `prefix` (e.g. "test-1a2b." -> "test-1a2b.marketdata.book-events.v1")."""
        return cls(book=f"{prefix}{BOOK_TOPIC}", trade=f"{prefix}{TRADE_TOPIC}")

    def topic_for(self, message: MarketData) -> str:
        return self.trade if isinstance(message, Trade) else self.book


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """What a replay published so far (or in all, once it returned)."""

    published: int = 0
    books: int = 0
    trades: int = 0
    last_at: datetime | None = None  # the timestamp of the last message published
    elapsed_s: float = 0.0
    stopped: bool = False  # True when the stop event ended the replay early

    @property
    def rate_per_s(self) -> float:
        return self.published / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _check_arguments(speed: float, limit: int | None, batch_size: int) -> None:
    if not (math.isfinite(speed) and speed >= 0):
        raise ValueError(f"speed must be a finite number >= 0, not {speed}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must not be negative, not {limit}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, not {batch_size}")


async def replay(
    source: MarketDataSource,
    producer: BatchPublisher,
    *,
    speed: float = 1.0,
    limit: int | None = None,
    loop: bool = False,
    topics: ReplayTopics | None = None,
    start_at: datetime | None = None,
    stop: asyncio.Event | None = None,
    sleep: Sleep = asyncio.sleep,
    clock: Clock = time.monotonic,
    on_progress: Callable[[ReplayReport], None] | None = None,
    batch_size: int = 500,
    correlation_id: str | None = None,
    retry_backoff_s: float = 0.5,
    max_backoff_s: float = 10.0,
) -> ReplayReport:
    """Publish the source's messages in order and return the counts.

    `speed` 1.0 keeps the messages' own pacing, 2.0 is twice as fast, 0 as fast as possible; `limit`
    stops after that many messages; `loop` starts a finite source again (later in time) at its end;
    `start_at` moves the first message to that time (gaps kept); setting `stop` ends the replay after
    the current batch. All messages of one run share a correlation id. A batch the broker refuses is retried
    (backoff from `retry_backoff_s` doubling to `max_backoff_s`) until it is acknowledged or `stop` is set.
    """
    _check_arguments(speed, limit, batch_size)
    messages: Iterator[MarketData] = looped(source) if loop else source.messages()
    if start_at is not None:
        messages = rebased(messages, start_at)
    if limit is not None:
        messages = itertools.islice(messages, limit)
    run = _Run(
        producer=producer,
        topics=topics or ReplayTopics(),
        speed=speed,
        stop=stop,
        sleep=sleep,
        clock=clock,
        on_progress=on_progress,
        batch_size=batch_size,
        correlation_id=correlation_id or new_correlation_id(),
        retry_backoff_s=retry_backoff_s,
        max_backoff_s=max_backoff_s,
    )
    return await run.publish(messages)


class _Run:
    def __init__(
        self,
        *,
        producer: BatchPublisher,
        topics: ReplayTopics,
        speed: float,
        stop: asyncio.Event | None,
        sleep: Sleep,
        clock: Clock,
        on_progress: Callable[[ReplayReport], None] | None,
        batch_size: int,
        correlation_id: str,
        retry_backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self.producer = producer
        self.topics = topics
        self.speed = speed
        self.stop = stop
        self.sleep = sleep
        self.clock = clock
        self.on_progress = on_progress
        self.batch_size = batch_size
        self.correlation_id = correlation_id
        self.retry_backoff_s = retry_backoff_s
        self.max_backoff_s = max_backoff_s
        self.pending: list[MarketData] = []
        self.report = ReplayReport()
        self.started = clock()
        self.origin: tuple[float, datetime] | None = None  # (clock, message time) of the first message

    def _stopped(self) -> bool:
        return self.stop is not None and self.stop.is_set()

    def _delay_s(self, message: MarketData) -> float:
        if self.speed == 0:
            return 0.0
        if self.origin is None:
            self.origin = (self.clock(), message.timestamp)
            return 0.0
        # Against the first message's schedule, not the previous one's: sleeping never accumulates drift.
        wall_start, time_start = self.origin
        due = wall_start + (message.timestamp - time_start).total_seconds() / self.speed
        return due - self.clock()

    async def publish(self, messages: Iterator[MarketData]) -> ReplayReport:
        for message in messages:
            if self._stopped():
                break
            delay_s = self._delay_s(message)
            if delay_s > 0:
                if not await self._flush():
                    return self._snapshot(stopped=True)
                await self._pause(delay_s)
                if self._stopped():
                    break
            self.pending.append(message)
            if len(self.pending) >= self.batch_size and not await self._flush():
                return self._snapshot(stopped=True)
        await self._flush()
        return self._snapshot(stopped=self._stopped())

    async def _pause(self, delay_s: float) -> None:
        if self.stop is None:
            await self.sleep(delay_s)
            return
        sleeper = asyncio.ensure_future(self.sleep(delay_s))
        stopper = asyncio.ensure_future(self.stop.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    async def _flush(self) -> bool:
        """Publish what is pending; False when the replay was stopped before the broker acknowledged it."""
        if not self.pending:
            return True
        batch, self.pending = self.pending, []
        records = [self._record(message) for message in batch]
        if not await self._publish_retrying(records):
            return False
        trades = sum(isinstance(message, Trade) for message in batch)
        self.report = ReplayReport(
            published=self.report.published + len(batch),
            books=self.report.books + len(batch) - trades,
            trades=self.report.trades + trades,
            last_at=batch[-1].timestamp,
        )
        if self.on_progress is not None:
            self.on_progress(self._snapshot(stopped=False))
        return True

    async def _publish_retrying(self, records: list[OutgoingMessage]) -> bool:
        return await publish_until_acknowledged(
            self.producer, records, self.stop, initial_s=self.retry_backoff_s, max_s=self.max_backoff_s
        )

    def _record(self, message: MarketData) -> OutgoingMessage:
        return outgoing_record(message, self.topics, PRODUCER_NAME, self.correlation_id)

    def _snapshot(self, *, stopped: bool) -> ReplayReport:
        return ReplayReport(
            published=self.report.published,
            books=self.report.books,
            trades=self.report.trades,
            last_at=self.report.last_at,
            elapsed_s=self.clock() - self.started,
            stopped=stopped,
        )


def outgoing_record(
    message: MarketData, topics: ReplayTopics, producer_name: str, correlation_id: str | None
) -> OutgoingMessage:
    """A market-data message as the Kafka record every feed publishes (envelope, key = symbol, its topic)."""
    envelope = to_envelope(message, producer_name, correlation_id=correlation_id)
    return OutgoingMessage(
        topic=topics.topic_for(message),
        key=message.symbol,
        value=envelope.to_bytes(),
        headers=tuple(envelope.kafka_headers()),
    )


async def publish_until_acknowledged(
    producer: BatchPublisher,
    records: list[OutgoingMessage],
    stop: asyncio.Event | None,
    *,
    initial_s: float,
    max_s: float,
) -> bool:
    """Publish one batch, retrying with backoff while the broker is unavailable (logged once per outage); False
    when `stop` was set before the broker acknowledged it."""
    failures = 0
    try:
        async for attempt in attempts_until_stopped(
            stop or asyncio.Event(), on=BROKER_UNAVAILABLE_ERRORS, initial_s=initial_s, max_s=max_s
        ):
            with attempt:
                try:
                    await producer.publish_batch(records)
                except BROKER_UNAVAILABLE_ERRORS as exc:
                    failures += 1
                    if failures == 1:  # once per outage, not once per attempt
                        log.warning("replay_publish_failed", error_type=type(exc).__name__, error=str(exc)[:300])
                    raise
    except RetryStopped:
        return False
    if failures:
        log.info("replay_publish_recovered", failed_attempts=failures)
    return True
