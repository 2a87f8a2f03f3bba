"""The replay publishes enveloped market data that a consumer reads back in order, per symbol."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer

from data.replay.publisher import replay
from data.replay.source import SyntheticMarket
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.marketdata import BookSnapshot, decode_marketdata


async def test_replay_reaches_kafka_in_order(kafka_bootstrap: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}."
    producer = EventProducer(bootstrap=kafka_bootstrap, client_id="test-replay")
    await producer.start()
    market = SyntheticMarket(seed=9, start_at=datetime(2026, 2, 1, tzinfo=UTC))
    try:
        stats = await replay(market.messages(), producer, speed=0, limit=200, topic_prefix=prefix)
    finally:
        await producer.stop()
    assert stats.published == 200
    expected = list(
        itertools.islice(SyntheticMarket(seed=9, start_at=datetime(2026, 2, 1, tzinfo=UTC)).messages(), 200)
    )

    consumer = AIOKafkaConsumer(
        f"{prefix}marketdata.book-events.v1",
        f"{prefix}marketdata.trade-events.v1",
        bootstrap_servers=kafka_bootstrap,
        auto_offset_reset="earliest",
        group_id=f"g-{uuid.uuid4().hex}",
    )
    await consumer.start()
    received = []
    try:
        while len(received) < 200:
            batch = await consumer.getmany(timeout_ms=5_000)
            if not batch:
                break
            for records in batch.values():
                received += [decode_marketdata(Envelope.from_bytes(r.value)) for r in records]
    finally:
        await consumer.stop()
    assert len(received) == 200
    books = [m for m in received if isinstance(m, BookSnapshot)]
    assert books == [m for m in expected if isinstance(m, BookSnapshot)]
