"""The market-data sink: `marketdata.*` from Kafka into PostgreSQL, in batches, through the `marketdata` inbox.

Per batch (up to `batch_size` records from `getmany`): every record is decoded; one that is not an envelope, not a
market-data type or breaks the schema goes to `marketdata.quarantine` with its topic, partition, offset and the
reason. The others claim their event id in `marketdata.inbox` (one multi-row INSERT ... ON CONFLICT DO NOTHING);
only the claimed ones are applied: trades into `marketdata.trades` (idempotent on their key), every BookSnapshot
into `marketdata.book_snapshots` (reason "snapshot": a subscription or a checksum resync), and, from the book kept
up to date with the deltas, one snapshot per `snapshot_interval_s` of feed time (reason "interval"). Inbox rows,
trades, snapshots and quarantine rows commit in ONE transaction; the Kafka offsets are committed after it. A
crash in between redelivers the batch and the inbox turns it into a no-op: nothing dropped, nothing counted twice.

The books the deltas maintain live in memory: after a restart or a failed batch, interval snapshots resume at the
next feed snapshot. A delta whose sequence skips, or that crosses the book, invalidates it until then; the delta
that crosses it is quarantined (reason `crossed book: ...`, as a crossed feed snapshot is), once per episode since
the book stays invalid until the next feed snapshot, and the analytics scan turns it into a `crossed_book` anomaly.
No crossed book is ever stored.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from data.ingest import store
from shared.contracts.marketdata import crossed_book_reason
from shared.db.uow import UnitOfWork
from shared.events.envelope import Envelope, MessageDecodeError
from shared.marketdata import (
    BOOK_TOPIC,
    TRADE_TOPIC,
    BookDelta,
    BookSnapshot,
    Level,
    MarketData,
    MarketDataError,
    Trade,
    decode_marketdata,
)
from shared.observability.logging import get_logger
from shared.observability.metrics import counter

log = get_logger(__name__)

SINK_CONSUMER = "marketdata-sink"
SINK_TOPICS = (TRADE_TOPIC, BOOK_TOPIC)
STORED = counter("aether_marketdata_sink_rows_total", "Rows the market-data sink stored, by kind.", ["kind"])


def kafka_source(topic: str) -> str:
    """The quarantine `source` of a record of `topic`."""
    return f"kafka:{topic}"


def kafka_position(partition: int, offset: int) -> str:
    """The quarantine `position` of a record."""
    return f"partition {partition} offset {offset}"


@dataclass
class SinkStats:
    """What the sink has done since it started."""

    batches: int = 0
    records: int = 0
    duplicates: int = 0
    trades: int = 0
    snapshots: int = 0
    quarantined: int = 0


@dataclass
class _Book:
    bids: dict[Decimal, Decimal] = field(default_factory=dict)
    asks: dict[Decimal, Decimal] = field(default_factory=dict)
    sequence: int = 0
    stored_at: datetime | None = None
    valid: bool = False


class BookKeeper:
    """The books the deltas maintain, and when each is due for an interval snapshot (by feed time)."""

    def __init__(self, interval: timedelta, depth: int) -> None:
        self._interval = interval
        self._depth = depth
        self._books: dict[tuple[str, str], _Book] = {}

    def reset(self) -> None:
        """Forget every book (after a failed batch): interval snapshots wait for the next feed snapshot."""
        self._books.clear()

    def on_snapshot(self, message: BookSnapshot) -> store.SnapshotRow:
        """Replace the book; a feed snapshot is always stored."""
        book = self._books.setdefault((message.venue, message.symbol), _Book())
        book.bids = {level.price: level.qty for level in message.bids}
        book.asks = {level.price: level.qty for level in message.asks}
        book.sequence, book.stored_at, book.valid = message.sequence, message.timestamp, True
        return store.SnapshotRow.of(message, "snapshot", self._depth)

    def on_delta(self, message: BookDelta) -> store.SnapshotRow | Crossed | None:
        """Apply a delta; the interval snapshot when one is due, Crossed when the delta crossed the book."""
        book = self._books.get((message.venue, message.symbol))
        if book is None or not book.valid:
            return None
        if message.sequence != book.sequence + 1:
            book.valid = False
            log.warning(
                "sink_book_sequence_gap", symbol=message.symbol, expected=book.sequence + 1, got=message.sequence
            )
            return None
        book.sequence = message.sequence
        for levels, side in ((message.bids, book.bids), (message.asks, book.asks)):
            for level in levels:
                if level.qty == 0:
                    side.pop(level.price, None)
                else:
                    side[level.price] = level.qty
        bids = sorted(book.bids, reverse=True)[: self._depth]
        asks = sorted(book.asks)[: self._depth]
        if bids and asks and bids[0] >= asks[0]:
            book.valid = False
            log.warning("sink_book_crossed", symbol=message.symbol, sequence=message.sequence)
            return Crossed(crossed_book_reason(bids[0], asks[0]))
        if book.stored_at is not None and message.timestamp - book.stored_at < self._interval:
            return None
        book.stored_at = message.timestamp
        return store.SnapshotRow(
            message.venue,
            message.symbol,
            message.timestamp,
            message.sequence,
            "interval",
            [Level(price=p, qty=book.bids[p]) for p in bids],
            [Level(price=p, qty=book.asks[p]) for p in asks],
            message.checksum,
        )


@dataclass(frozen=True, slots=True)
class Crossed:
    """A delta crossed the book: why, for the quarantine."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Decoded:
    record: ConsumerRecord[Any, Any]
    envelope: Envelope
    message: MarketData


class MarketDataSink:
    """Consume `topics` as `group_id` and store them, one transaction per batch (see the module docstring)."""

    def __init__(
        self,
        *,
        bootstrap: str,
        sessionmaker: async_sessionmaker[AsyncSession],
        group_id: str = SINK_CONSUMER,
        topics: Sequence[str] = SINK_TOPICS,
        batch_size: int = 1_000,
        snapshot_interval_s: float = 60.0,
        depth: int = 10,
        poll_timeout_ms: int = 200,
        security_protocol: str = "PLAINTEXT",
        ssl_context: ssl.SSLContext | None = None,
        auto_offset_reset: str = "earliest",
    ) -> None:
        if batch_size < 1 or depth < 1 or snapshot_interval_s <= 0:
            raise ValueError("batch_size and depth must be >= 1, snapshot_interval_s > 0")
        self._topics = list(topics)
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "group_id": group_id,
            "client_id": group_id,
            "security_protocol": security_protocol,
            "ssl_context": ssl_context,
            "enable_auto_commit": False,
            "auto_offset_reset": auto_offset_reset,
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
        }
        self._sessionmaker = sessionmaker
        self._consumer_name = group_id
        self._batch_size = batch_size
        self._poll_timeout_ms = poll_timeout_ms
        self._books = BookKeeper(timedelta(seconds=snapshot_interval_s), depth)
        self._consumer: AIOKafkaConsumer | None = None
        self.stats = SinkStats()

    async def start(self) -> None:
        """Join the consumer group."""
        if self._consumer is not None:
            return
        consumer = AIOKafkaConsumer(*self._topics, **self._options)
        try:
            await consumer.start()
        except BaseException:
            await consumer.stop()
            raise
        self._consumer = consumer

    async def stop(self) -> None:
        """Leave the group; what was stored but not committed comes again and the inbox absorbs it."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()

    async def run(self, stop_event: asyncio.Event) -> None:
        """Store batches until `stop_event` is set."""
        consumer = self._consumer
        if consumer is None:
            raise RuntimeError("MarketDataSink.start() has not been called")
        while not stop_event.is_set():
            batches = await consumer.getmany(timeout_ms=self._poll_timeout_ms, max_records=self._batch_size)
            records = [record for partition in batches.values() for record in partition]
            if not records:
                continue
            try:
                await self.store_batch(records)
            except BaseException:
                # Move the fetch positions back so this batch comes again (the inbox absorbs what had committed).
                for tp, partition in batches.items():
                    if partition and tp in consumer.assignment():
                        consumer.seek(tp, partition[0].offset)
                raise
            await self._commit(consumer, batches)

    async def store_batch(self, records: Sequence[ConsumerRecord[Any, Any]]) -> None:
        """Store one batch of records in one transaction (inbox, trades, snapshots, quarantine)."""
        bad: list[store.QuarantineEntry] = []
        good: list[_Decoded] = []
        for record in records:
            decoded = self._decode(record)
            if isinstance(decoded, store.QuarantineEntry):
                bad.append(decoded)
            else:
                good.append(decoded)
        try:
            async with UnitOfWork(self._sessionmaker) as uow:
                claimed = await self._claim(uow.session, good)
                fresh = [item for item in good if item.envelope.event_id in claimed]
                trades, snapshots, crossed = self._rows(fresh)
                stored_trades = await store.insert_trades(uow.session, trades)
                stored_snapshots = await store.insert_book_snapshots(uow.session, snapshots)
                stored_bad = await store.quarantine(uow.session, [*bad, *crossed])
        except BaseException:
            self._books.reset()
            raise
        self.stats.batches += 1
        self.stats.records += len(records)
        self.stats.duplicates += len(good) - len(fresh)
        self.stats.trades += stored_trades
        self.stats.snapshots += stored_snapshots
        self.stats.quarantined += stored_bad
        STORED.labels("trade").inc(stored_trades)
        STORED.labels("snapshot").inc(stored_snapshots)
        STORED.labels("quarantine").inc(stored_bad)

    def _decode(self, record: ConsumerRecord[Any, Any]) -> _Decoded | store.QuarantineEntry:
        raw = record.value if isinstance(record.value, bytes) else b""
        try:
            envelope = Envelope.from_bytes(record.value)
            message = decode_marketdata(envelope)
        except (MessageDecodeError, MarketDataError) as exc:
            log.error("sink_record_quarantined", topic=record.topic, partition=record.partition, offset=record.offset)
            where = kafka_position(record.partition, record.offset)
            return store.QuarantineEntry(kafka_source(record.topic), where, str(exc)[:1_000], raw)
        return _Decoded(record, envelope, message)

    async def _claim(self, session: AsyncSession, items: list[_Decoded]) -> set[Any]:
        claims = {
            item.envelope.event_id: store.InboxClaim(
                item.envelope.event_id, item.record.topic, item.record.partition, item.record.offset
            )
            for item in items
        }
        return await store.claim_events(session, self._consumer_name, claims.values())

    def _rows(self, items: list[_Decoded]) -> tuple[list[Trade], list[store.SnapshotRow], list[store.QuarantineEntry]]:
        trades: list[Trade] = []
        snapshots: list[store.SnapshotRow] = []
        crossed: list[store.QuarantineEntry] = []
        seen: set[Any] = set()
        for item in items:
            if item.envelope.event_id in seen:  # the same event twice in one batch
                continue
            seen.add(item.envelope.event_id)
            message = item.message
            if isinstance(message, Trade):
                trades.append(message)
            elif isinstance(message, BookSnapshot):
                snapshots.append(self._books.on_snapshot(message))
            else:
                due = self._books.on_delta(message)
                if isinstance(due, Crossed):
                    record = item.record
                    where = kafka_position(record.partition, record.offset)
                    raw = record.value if isinstance(record.value, bytes) else b""
                    crossed.append(store.QuarantineEntry(kafka_source(record.topic), where, due.reason, raw))
                elif due is not None:
                    snapshots.append(due)
        return trades, snapshots, crossed

    async def _commit(
        self, consumer: AIOKafkaConsumer, batches: dict[TopicPartition, list[ConsumerRecord[Any, Any]]]
    ) -> None:
        offsets = {tp: records[-1].offset + 1 for tp, records in batches.items() if records}
        try:
            await consumer.commit(offsets)
        except KafkaError as exc:
            # Rebalanced away: the records come again to the new owner and the inbox absorbs them.
            log.warning("sink_commit_failed", error=str(exc)[:300])
