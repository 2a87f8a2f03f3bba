"""Outbox rows and Kafka records as the event-plumbing tests write and read them."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import UnitOfWork
from shared.events import Envelope, EventTables, add_to_outbox


def numbered_event(key: str, seq: int, **overrides: Any) -> Envelope:
    """An OrderFilled of aggregate `key` carrying `seq` in its payload (fields of the envelope overridable)."""
    fields: dict[str, Any] = {
        "type": "OrderFilled",
        "producer": "oms",
        "aggregate_id": key,
        "payload": {"seq": seq, "qty": "0.5"},
    }
    fields.update(overrides)
    return Envelope.new(**fields)


async def write_outbox(
    sessions: async_sessionmaker[AsyncSession], tables: EventTables, topic: str, envelopes: list[Envelope]
) -> None:
    """Add `envelopes` to the outbox for `topic` in one transaction."""
    async with UnitOfWork(sessions) as uow:
        for envelope in envelopes:
            await add_to_outbox(uow.session, tables, topic=topic, envelope=envelope)


async def read_all(bootstrap: str, topic: str, *, timeout_s: float = 15.0) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record on `topic`, from the beginning to the end offsets at call time, in partition order."""
    # No group: the consumer is assigned every partition of the topic as soon as it starts.
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = sorted(consumer.assignment())
        assert tps, f"topic {topic} does not exist"
        end_offsets = await consumer.end_offsets(tps)
        records: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        deadline = time.monotonic() + timeout_s
        while [tp for tp in tps if await consumer.position(tp) < end_offsets[tp]]:
            assert time.monotonic() < deadline, "topic not read to its end in time"
            for tp, batch in (await consumer.getmany(*tps, timeout_ms=200)).items():
                records[tp].extend(batch)
        return [record for tp in tps for record in records[tp]]
    finally:
        await consumer.stop()
