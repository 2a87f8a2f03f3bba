"""The transactional outbox and its relay against the real PostgreSQL and Kafka: rolled-back rows never go
out, rows go out once, in key order, with their key and headers, also with two relays and a failing broker.

The consumer loop and the inbox are in test_events_consumer.py.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import ConsumerRecord
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import UnitOfWork
from shared.events import (
    Envelope,
    EventProducer,
    EventTables,
    OutboxItem,
    OutboxRelay,
    add_many_to_outbox,
    add_to_outbox,
    header_value,
)
from shared.events.envelope import HEADER_CORRELATION_ID
from tests.helpers import eventually
from tests.kit.events import numbered_event, read_all, write_outbox


def _seq_by_key(records: list[ConsumerRecord[bytes, bytes]]) -> dict[str, list[int]]:
    seqs: dict[str, list[int]] = defaultdict(list)
    for record in records:
        envelope = Envelope.from_bytes(record.value)
        seqs[envelope.aggregate_id].append(int(str(envelope.payload["seq"])))
    return seqs


async def test_rolled_back_outbox_row_is_never_published(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    rolled_back, committed = numbered_event("order-1", 1), numbered_event("order-1", 2)

    async def write_then_fail() -> None:
        async with UnitOfWork(sessions) as uow:
            await add_to_outbox(uow.session, tables, topic=unique_topic, envelope=rolled_back)
            raise RuntimeError("business rule failed")

    with pytest.raises(RuntimeError, match="business rule failed"):
        await write_then_fail()
    await write_outbox(sessions, tables, unique_topic, [committed])
    relay = OutboxRelay(sessions, tables, producer)

    assert await relay.relay_lag() == 1
    assert await relay.run_once() == 1
    assert await relay.run_once() == 0

    records = await read_all(kafka_bootstrap, unique_topic)
    assert [Envelope.from_bytes(record.value).event_id for record in records] == [committed.event_id]
    assert await relay.relay_lag() == 0


async def test_relay_publishes_in_order_with_key_and_headers_and_marks_sent(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    keys = ["order-a", "order-b", "order-c", "order-d"]
    for start in range(0, 40, 10):  # 4 transactions x 10 rows, keys interleaved
        await write_outbox(
            sessions,
            tables,
            unique_topic,
            [numbered_event(keys[seq % 4], seq, correlation_id="corr-7") for seq in range(start, start + 10)],
        )
    relay = OutboxRelay(sessions, tables, producer, batch_size=7)

    assert await relay.relay_lag() == 40
    batches = []
    while published := await relay.run_once():
        batches.append(published)
    assert batches == [7, 7, 7, 7, 7, 5]

    records = await read_all(kafka_bootstrap, unique_topic)
    assert len(records) == 40
    assert _seq_by_key(records) == {key: [s for s in range(40) if s % 4 == i] for i, key in enumerate(keys)}
    for record in records:
        envelope = Envelope.from_bytes(record.value)
        assert record.key == envelope.aggregate_id.encode()
        assert header_value(record.headers, HEADER_CORRELATION_ID) == "corr-7"
    async with UnitOfWork(sessions) as uow:
        unsent = await uow.session.scalar(
            select(func.count()).select_from(tables.outbox).where(tables.outbox.c.sent_at.is_(None))
        )
    assert unsent == 0


async def test_two_concurrent_relays_publish_each_row_once_in_key_order(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    rows = 600
    keys = [f"order-{i}" for i in range(12)]
    producers = [EventProducer(kafka_bootstrap, client_id=f"relay-{i}") for i in range(2)]
    for p in producers:
        await p.start()
    relays = [OutboxRelay(sessions, tables, p, batch_size=25, idle_interval_s=0.02) for p in producers]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run(stop)) for relay in relays]
    try:
        # Write while both relays are already polling, in 60 transactions of 10 rows.
        for start in range(0, rows, 10):
            await write_outbox(
                sessions, tables, unique_topic, [numbered_event(keys[s % 12], s) for s in range(start, start + 10)]
            )
            for relay in relays:
                relay.wake()
        await eventually(lambda: _lag_is_zero(relays[0]), timeout_s=30, message="outbox drained")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for p in producers:
            await p.stop()

    records = await read_all(kafka_bootstrap, unique_topic)
    event_ids = [Envelope.from_bytes(record.value).event_id for record in records]
    assert len(event_ids) == rows
    assert len(set(event_ids)) == rows, "a row was published twice"
    for key, seqs in _seq_by_key(records).items():
        assert seqs == sorted(seqs), f"messages of {key} overtook each other"


async def _lag_is_zero(relay: OutboxRelay) -> bool:
    return await relay.relay_lag() == 0


class FlakyProducer(EventProducer):
    """A real producer whose first `failures` batches fail as if the broker were unreachable."""

    def __init__(self, bootstrap: str, failures: int) -> None:
        super().__init__(bootstrap, client_id="flaky")
        self.failures_left = failures
        self.calls = 0

    async def publish_batch(self, messages: Any, *, timeout_s: float = 30.0) -> Any:
        self.calls += 1
        if self.failures_left > 0:
            self.failures_left -= 1
            raise KafkaConnectionError("broker unreachable (injected)")
        return await super().publish_batch(messages, timeout_s=timeout_s)


async def test_relay_loop_survives_publish_failures_without_dropping_rows(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    await write_outbox(sessions, tables, unique_topic, [numbered_event("order-1", 1), numbered_event("order-1", 2)])
    flaky = FlakyProducer(kafka_bootstrap, failures=3)
    await flaky.start()
    relay = OutboxRelay(sessions, tables, flaky, idle_interval_s=0.01, max_backoff_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await eventually(lambda: _lag_is_zero(relay), message="outbox drained after the failures")
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=5)
        await flaky.stop()
    assert flaky.calls == 4, "3 failed attempts, then one successful batch"
    records = await read_all(kafka_bootstrap, unique_topic)
    assert _seq_by_key(records) == {"order-1": [1, 2]}


async def test_a_batch_of_outbox_items_goes_out_in_order_with_each_items_key(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    events = [numbered_event("order-a", seq) for seq in range(5)]
    items = [
        OutboxItem(unique_topic, envelope, key="account-1" if seq == 4 else None) for seq, envelope in enumerate(events)
    ]
    async with UnitOfWork(sessions) as uow:
        await add_many_to_outbox(uow.session, tables, items)
        await add_many_to_outbox(uow.session, tables, [])
    relay = OutboxRelay(sessions, tables, producer)

    assert await relay.run_once() == 5

    records = await read_all(kafka_bootstrap, unique_topic)
    by_key: dict[bytes | None, list[object]] = defaultdict(list)
    for record in records:  # order holds per key (a key's partition), not across keys
        by_key[record.key].append(Envelope.from_bytes(record.value).event_id)
    assert by_key == {b"order-a": [e.event_id for e in events[:4]], b"account-1": [events[4].event_id]}
