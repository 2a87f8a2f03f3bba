"""Outbox rows and Kafka records as tests write and read them: numbered events, the outbox, a topic read to its
end, a `TopicReader` that keeps reading one topic."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord, TopicPartition
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db import UnitOfWork
from shared.events import Envelope, EventTables, add_to_outbox
from tests.helpers import eventually


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


class TopicReader:
    """Reads every envelope of one topic from the beginning."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=uuid.uuid4().hex
        )
        self.seen: list[Envelope] = []
        self.headers: list[list[tuple[str, bytes]]] = []  # of each envelope in `seen`

    def _take(self, batch: dict[Any, list[Any]]) -> None:
        for records in batch.values():
            for record in records:
                self.seen.append(Envelope.from_bytes(record.value))
                self.headers.append(list(record.headers or ()))

    async def __aenter__(self) -> TopicReader:
        await self.consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def until(self, count: int, *, timeout_s: float = 20) -> list[Envelope]:
        async def enough() -> bool:
            self._take(await self.consumer.getmany(timeout_ms=200))
            return len(self.seen) >= count

        await eventually(enough, timeout_s=timeout_s, message=f"{count} envelopes")
        return self.seen

    async def settle(self, idle_ms: int = 1_500) -> list[Envelope]:
        """Whatever else arrives within `idle_ms` (to show that nothing more was published)."""
        self._take(await self.consumer.getmany(timeout_ms=idle_ms))
        return self.seen
