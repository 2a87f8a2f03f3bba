"""aether_consumer_lag_records against the real Kafka: records published and not yet handled are the lag, it falls
to 0 once they are, and a stopped loop leaves no stale series."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.events import ConsumerLoop, Envelope, EventProducer, EventTables
from shared.observability.metrics import REGISTRY
from tests.helpers import eventually
from tests.kit.events import numbered_event

PUBLISHED = 10
HANDLED_BEFORE_GATE = 4


def _lag(consumer: str, topic: str) -> float | None:
    """The loop's lag summed over the topic's partitions (the records share a key: one partition has them all)."""
    values = [
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "aether_consumer_lag_records"
        for sample in metric.samples
        if sample.labels["consumer"] == consumer and sample.labels["topic"] == topic
    ]
    return sum(values) if values else None


def _lag_is(consumer: str, topic: str, expected: int) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return _lag(consumer, topic) == expected

    return probe


async def test_lag_counts_the_records_not_yet_handled_then_falls_to_zero(
    sessions: async_sessionmaker[AsyncSession],
    tables: EventTables,
    producer: EventProducer,
    unique_topic: str,
    kafka_bootstrap: str,
) -> None:
    for seq in range(PUBLISHED):
        await producer.send(unique_topic, numbered_event("lag", seq))
    gate = asyncio.Event()
    handled: list[int] = []

    async def handler(_session: AsyncSession, envelope: Envelope) -> None:
        if len(handled) == HANDLED_BEFORE_GATE:
            await gate.wait()
        handled.append(int(envelope.payload["seq"]))

    name = f"lag-{uuid.uuid4().hex[:8]}"
    loop = ConsumerLoop(
        bootstrap=kafka_bootstrap,
        group_id=name,
        topics=[unique_topic],
        sessionmaker=sessions,
        tables=tables,
        handler=handler,
        consumer_name=name,
        dead_letter_producer=producer,
        max_poll_records=1,  # one record per fetched batch: the lag is exported after each
    )
    stop = asyncio.Event()
    await loop.start()
    task = asyncio.create_task(loop.run(stop))
    try:
        await eventually(_lag_is(name, unique_topic, PUBLISHED - HANDLED_BEFORE_GATE), message="lag 6")
        assert handled == list(range(HANDLED_BEFORE_GATE))
        gate.set()
        await eventually(_lag_is(name, unique_topic, 0), message="lag 0")
        assert handled == list(range(PUBLISHED))
    finally:
        gate.set()
        stop.set()
        await asyncio.wait_for(task, timeout=15)
        await loop.stop()
    assert _lag(name, unique_topic) is None
