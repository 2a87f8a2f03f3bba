"""`aether feed kraken` end to end: the Kraken v2 protocol fake -> the feed CLI (a real process) -> Kafka -> decoded.

The books rebuilt from what reached Kafka are checked against the venue's own checksum after every message (the
reference implementation of the fake, independent of the client), across a corrupted checksum and a disconnect.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from decimal import Decimal

from data.replay.publisher import ReplayTopics
from shared.events import Envelope
from shared.marketdata import BookDelta, BookSnapshot, Trade, decode_marketdata
from tests.fakes.kraken_ws import KrakenWsFake, reference_checksum
from tests.helpers import eventually
from tests.integration.test_feed_replay import count_records, read_all

SCALE = (Decimal(10), Decimal(10) ** 8)  # BTC/USD and ETH/USD in the fake: price_precision 1, qty_precision 8


def _ticks(side: dict[Decimal, Decimal]) -> dict[int, int]:
    return {int(price * SCALE[0]): int(qty * SCALE[1]) for price, qty in side.items()}


async def test_the_live_feed_publishes_validated_books_and_trades(kafka_bootstrap: str) -> None:
    prefix = f"test-{uuid.uuid4().hex[:10]}."
    topics = ReplayTopics.with_prefix(prefix)
    async with KrakenWsFake(interval_s=0.01) as fake:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "data.replay.cli", "kraken", "--symbols", "BTC/USD,ETH/USD", "--url", fake.url,
            "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        try:

            async def books_published(at_least: int) -> int | None:
                count = await count_records(kafka_bootstrap, topics.book)
                return count if count >= at_least else None

            await eventually(lambda: books_published(40), timeout_s=30, message="no books on Kafka")
            fake.corrupt_next_checksum("BTC/USD")
            await eventually(lambda: books_published(100), timeout_s=30)
            await fake.disconnect_all()
            await eventually(lambda: books_published(160), timeout_s=30)
        finally:
            process.send_signal(signal.SIGINT)
            _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()[-2000:]
    summary = stderr.decode()
    assert "checksum_mismatch': 1" in summary, summary[-1000:]
    assert "connections 2" in summary, summary[-1000:]

    books: dict[str, tuple[dict[Decimal, Decimal], dict[Decimal, Decimal]]] = {}
    snapshots = {"BTC/USD": 0, "ETH/USD": 0}
    checked = 0
    for record in await read_all(kafka_bootstrap, topics.book):
        envelope = Envelope.from_bytes(record.value)
        assert envelope.producer == "feed-kraken"
        message = decode_marketdata(envelope)
        assert record.key == message.symbol.encode()
        if isinstance(message, BookSnapshot):
            snapshots[message.symbol] += 1
            books[message.symbol] = (
                {lv.price: lv.qty for lv in message.bids},
                {lv.price: lv.qty for lv in message.asks},
            )
        else:
            assert isinstance(message, BookDelta)
            for side, levels in zip(books[message.symbol], (message.bids, message.asks), strict=True):
                for level in levels:
                    if level.qty == 0:
                        side.pop(level.price, None)
                    else:
                        side[level.price] = level.qty
        bids, asks = books[message.symbol]
        assert len(bids) <= 10 and len(asks) <= 10  # noqa: PT018
        assert message.checksum == reference_checksum(_ticks(asks), _ticks(bids))
        checked += 1
    assert checked >= 160
    assert snapshots == {"BTC/USD": 3, "ETH/USD": 2}  # first, after the mismatch (BTC only), after the reconnect
    trades = [decode_marketdata(Envelope.from_bytes(r.value)) for r in await read_all(kafka_bootstrap, topics.trade)]
    assert trades
    assert all(isinstance(trade, Trade) and trade.venue == "kraken" for trade in trades)
