"""`aether feed coinbase` end to end: the Coinbase protocol fake (level2 + market_trades over a loopback WebSocket)
-> the live feed -> Kafka -> decoded: books in Aether's BTC/USD form, rebuilt equal to the venue's across a
sequence gap (resynced from a fresh snapshot, never a guessed book)."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal

from data.replay.live import run_coinbase
from data.replay.publisher import ReplayTopics
from shared.domain.types import OrderSide, Symbol
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.marketdata import BookDelta, BookSnapshot, Trade, decode_marketdata
from shared.venues.coinbase.ws_public import FeedOptions
from tests.fakes.coinbase import CoinbaseFake
from tests.helpers import eventually
from tests.integration.test_feed_replay import count_records, read_all

BTC = Symbol("BTC/USD")


async def test_the_coinbase_feed_publishes_books_and_trades_and_resyncs_after_a_gap(kafka_bootstrap: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    topics = ReplayTopics.with_prefix(prefix)
    fake = CoinbaseFake(None)
    producer = EventProducer(kafka_bootstrap, client_id="test-feed-coinbase")
    await producer.start()
    stop = asyncio.Event()
    async with fake.serve():
        await fake.publish_book(BTC, [("100", "1")], [("101", "1")])
        task = asyncio.create_task(run_coinbase(["BTC/USD"], producer, topics, FeedOptions(url=fake.ws_url), stop))
        try:

            async def books(at_least: int) -> int | None:
                count = await count_records(kafka_bootstrap, topics.book)
                return count if count >= at_least else None

            await eventually(lambda: books(1), timeout_s=30, message="no snapshot on Kafka")
            await fake.publish_book(BTC, [("100", "2")], [("101", "1")])
            await eventually(lambda: books(2), timeout_s=30, message="no delta on Kafka")
            fake.gap_next()
            await fake.publish_book(BTC, [("100", "3"), ("99", "1")], [("101", "1")])
            await eventually(lambda: books(3), timeout_s=30, message="no resync snapshot on Kafka")
            await fake.publish_trade(BTC, "101", "0.5", OrderSide.BUY)
            await eventually(
                lambda: count_records(kafka_bootstrap, topics.trade), timeout_s=30, message="no trade on Kafka"
            )
        finally:
            stop.set()
            report, feed = await asyncio.wait_for(task, 15)
            await producer.stop()

    messages = [decode_marketdata(Envelope.from_bytes(r.value)) for r in await read_all(kafka_bootstrap, topics.book)]
    assert [type(m) for m in messages] == [BookSnapshot, BookDelta, BookSnapshot]
    assert {m.symbol for m in messages} == {"BTC/USD"}
    last = messages[-1]
    assert isinstance(last, BookSnapshot)
    assert [(lv.price, lv.qty) for lv in last.bids] == [(Decimal(100), Decimal(3)), (Decimal(99), Decimal(1))]
    assert feed.stats.faults == {"sequence_gap": 1}
    (trade,) = [decode_marketdata(Envelope.from_bytes(r.value)) for r in await read_all(kafka_bootstrap, topics.trade)]
    assert isinstance(trade, Trade)
    assert (trade.venue, trade.symbol, trade.side) == ("coinbase", "BTC/USD", "buy")
    assert report.published == 4
