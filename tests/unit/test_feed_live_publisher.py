"""The live feed's publisher: queued messages go out in order with the replay's records, a broker outage is
retried until the batch is acknowledged, and a stop during an outage returns instead of hanging."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaConnectionError

from data.replay.live import KRAKEN_PRODUCER_NAME, LivePublisher
from data.replay.publisher import ReplayTopics
from shared.events import Envelope
from shared.marketdata import decode_marketdata
from tests.helpers import eventually
from tests.kit.marketdata import synthetic
from tests.unit.test_marketdata_replay import OutagePublisher


def _true(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return condition()

    return probe


async def test_queued_messages_reach_the_broker_in_order_across_an_outage() -> None:
    messages = synthetic(seed=3, count=40)
    broker = OutagePublisher(failures=2, error=KafkaConnectionError("broker down"))
    stop = asyncio.Event()
    publisher = LivePublisher(
        broker, ReplayTopics(), producer_name=KRAKEN_PRODUCER_NAME, stop=stop, batch_size=16, retry_backoff_s=0.001
    )
    for message in messages:
        await publisher.sink(message)
    running = asyncio.create_task(publisher.run())
    await eventually(_true(lambda: publisher.report.published == len(messages)), timeout_s=10)
    stop.set()
    report = await asyncio.wait_for(running, 10)
    assert broker.attempts == len(broker.batches) + 2
    envelopes = [Envelope.from_bytes(record.value) for record in broker.records]
    assert [decode_marketdata(envelope) for envelope in envelopes] == messages
    assert {envelope.producer for envelope in envelopes} == {"feed-kraken"}
    assert report.published == 40
    assert report.trades == sum(m.TYPE == "TradePrinted" for m in messages)


async def test_a_stop_during_an_outage_returns() -> None:
    broker = OutagePublisher(failures=10**9, error=KafkaConnectionError("broker down"))
    stop = asyncio.Event()
    publisher = LivePublisher(
        broker, ReplayTopics(), producer_name=KRAKEN_PRODUCER_NAME, stop=stop, retry_backoff_s=0.001
    )
    await publisher.sink(synthetic(seed=3, count=1)[0])
    running = asyncio.create_task(publisher.run())
    await eventually(_true(lambda: broker.attempts >= 3), timeout_s=10)
    stop.set()
    report = await asyncio.wait_for(running, 10)
    assert report.published == 0
    assert broker.batches == []
