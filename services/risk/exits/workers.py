"""Background workers of the exit brackets, started by the risk service's lifespan.

- `exits-order-events`: OMS order events through the inbox (`risk.inbox`): entry fills arm/grow brackets,
  exit order events move them.
- `exits-marketdata`: trades (and book snapshots' best bid) per symbol; each batch runs the symbol's open
  brackets in one transaction that also stores the next Kafka offsets in `risk.exit_feed_offsets`, and the
  consumer seeks to those on assignment: a tick is applied exactly once, also across a crash.
- `exits-clock`: time limits.

The outbox relay of `risk.outbox` is started for every service by shared.app_factory (`risk.outbox-relay`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener

from services.risk.adapters import risk_adapters
from services.risk.exits.config import ExitSettings
from services.risk.exits.repository import ExitRepository
from services.risk.exits.use_cases import ExitUseCases
from shared.app_factory import BackgroundWorker, ServiceRuntime, run_consumer
from shared.db import UnitOfWork
from shared.events import Envelope, MessageDecodeError
from shared.marketdata import BookSnapshot, MarketDataError, Trade, decode_marketdata
from shared.observability.logging import get_logger

log = get_logger(__name__)


def price_of(envelope: Envelope) -> tuple[str, Decimal] | None:
    """(symbol, price) of a market-data message: a trade's price or a snapshot's best bid; None otherwise."""
    try:
        message = decode_marketdata(envelope)
    except MarketDataError:
        return None
    if isinstance(message, Trade):
        return message.symbol, message.price
    if isinstance(message, BookSnapshot) and message.bids:
        return message.symbol, message.bids[0].price
    return None


class MarketDataWatcher:
    """Feeds market prices to the exit engine, exactly once per record (offsets stored with the effects)."""

    def __init__(self, exits: ExitUseCases, settings: ExitSettings, bootstrap: str, security_protocol: str) -> None:
        self.exits = exits
        self.topics = [settings.exits_trade_topic, settings.exits_book_topic]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            security_protocol=security_protocol,
            group_id=f"{settings.exits_consumer_group}.marketdata",
            enable_auto_commit=False,
            auto_offset_reset=settings.exits_marketdata_offset_reset,
        )
        self.applied = 0

    async def run(self, stop_event: asyncio.Event) -> None:
        self.consumer.subscribe(self.topics, listener=_SeekToStored(self))
        await self.consumer.start()
        try:
            while not stop_event.is_set():
                batches = await self.consumer.getmany(timeout_ms=200, max_records=500)
                if batches:
                    await self.apply_batch(batches)
        finally:
            await self.consumer.stop()

    async def stored_offsets(self) -> dict[tuple[str, int], int]:
        async with UnitOfWork(self.exits.context.sessionmaker) as uow:
            return await ExitRepository(uow.session).feed_offsets(self.topics)

    async def apply_batch(self, batches: dict[TopicPartition, list[Any]]) -> None:
        stored = await self.stored_offsets()
        ticks: list[tuple[datetime, str, int, int, str, Decimal]] = []
        next_offsets: dict[tuple[str, int], int] = {}
        for tp, records in batches.items():
            for record in records:
                if record.offset < stored.get((tp.topic, tp.partition), 0):
                    continue  # applied before a crash, redelivered
                next_offsets[(tp.topic, tp.partition)] = record.offset + 1
                tick = _tick(record)
                if tick is not None:
                    ticks.append((tick[0], tp.topic, tp.partition, record.offset, tick[1], tick[2]))
        if not next_offsets:
            return
        ticks.sort()  # time order across topics, then a fixed tie-break: the same batch is replayed identically
        prices: dict[str, list[Decimal]] = {}
        for *_, symbol, price in ticks:
            prices.setdefault(symbol, []).append(price)
        context = self.exits.context
        async with UnitOfWork(context.sessionmaker) as uow:
            self.applied += await self.exits.prices(uow.session, prices, context.clock())
            await ExitRepository(uow.session).save_feed_offsets(next_offsets)
            context.wake_after_commit(uow)
        with contextlib.suppress(Exception):  # the database holds the position; Kafka's copy is a convenience
            await self.consumer.commit({TopicPartition(t, p): o for (t, p), o in next_offsets.items()})


def _tick(record: Any) -> tuple[datetime, str, Decimal] | None:
    try:
        envelope = Envelope.from_bytes(record.value)
    except MessageDecodeError:
        log.warning("exits_undecodable_marketdata", topic=record.topic, offset=record.offset)
        return None
    found = price_of(envelope)
    if found is None:
        return None
    return envelope.occurred_at, found[0], found[1]


class _SeekToStored(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, watcher: MarketDataWatcher) -> None:
        self.watcher = watcher

    async def on_partitions_revoked(self, revoked: Sequence[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Sequence[TopicPartition]) -> None:
        stored = await self.watcher.stored_offsets()
        for tp in assigned:
            offset = stored.get((tp.topic, tp.partition))
            if offset is not None:
                self.watcher.consumer.seek(tp, offset)


def _order_events(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        adapters = risk_adapters(runtime)
        settings = adapters.settings
        if not settings.exits_enabled:
            return
        name = f"{settings.exits_consumer_group}.order-events"
        # A new group starts where the setting says: the exit engine must not arm the whole history of a topic
        # it meets for the first time.
        await run_consumer(
            runtime,
            name=name,
            topics=[settings.exits_order_events_topic],
            handler=adapters.exits.order_events,
            auto_offset_reset=settings.exits_order_events_offset_reset,
        )

    return run


def _marketdata(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        adapters = risk_adapters(runtime)
        settings = adapters.settings
        if not settings.exits_enabled:
            return
        watcher = MarketDataWatcher(
            adapters.exits, settings, runtime.settings.kafka_bootstrap, runtime.settings.kafka_security_protocol
        )
        await watcher.run(runtime.stop_event)

    return run


def _clock(runtime: ServiceRuntime) -> Callable[[], Awaitable[None]]:
    async def run() -> None:
        adapters = risk_adapters(runtime)
        settings = adapters.settings
        if not settings.exits_enabled:
            return
        exits = adapters.exits
        while not runtime.stop_event.is_set():
            await exits.time_limits()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(runtime.stop_event.wait(), timeout=settings.exits_clock_interval_s)

    return run


WORKERS: Sequence[tuple[str, BackgroundWorker]] = (
    ("exits-order-events", _order_events),
    ("exits-marketdata", _marketdata),
    ("exits-clock", _clock),
)
