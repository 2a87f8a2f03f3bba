"""`aether feed kraken` end to end: the Kraken v2 protocol fake -> the feed CLI (a real process) -> Kafka -> decoded;
and paper trading on it (the feed -> the paper venue and the OMS's latest book -> a market order).

The books rebuilt from what reached Kafka are checked against the venue's own checksum after every message (the
reference implementation of the fake, independent of the client), across a corrupted checksum and a disconnect.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest

from data.replay.live import run_kraken
from data.replay.publisher import ReplayTopics
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.events import Envelope
from shared.marketdata import BookDelta, BookSnapshot, Trade, decode_marketdata
from shared.venues.kraken.ws_public import FeedOptions
from shared.venues.latest_book import book_key
from tests.fakes.kraken_ws import KrakenWsFake, reference_checksum
from tests.helpers import eventually, own_database
from tests.integration.test_feed_replay import count_records, read_all
from tests.kit.auth import token
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket

OPERATOR = token(Role.OPERATOR)
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


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "feed_kraken") as url:
        yield url


async def test_paper_trading_on_the_live_feed(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    """The README walkthrough: the fake -> the live feed -> the paper venue and the OMS; a market buy fills at the
    fake market's price (around 45,284), not at the kit's book (100)."""
    topics = ReplayTopics(book=paper_market.book_topic, trade=paper_market.trade_topic)
    async with (
        paper_oms(settings, module_database_url, paper_market, market_data_max_age_s=30.0) as (_, client),
        KrakenWsFake(interval_s=0.05) as fake,
    ):
        stop = asyncio.Event()
        feed = asyncio.create_task(
            run_kraken(["BTC/USD"], paper_market.producer, topics, FeedOptions(url=fake.url), stop)
        )
        try:

            async def live_book() -> bool:
                raw = await paper_market.redis.get(book_key("BTC/USD"))
                return raw is not None and Decimal(json.loads(raw)["asks"][0]["price"]) > 40_000

            await eventually(live_book, timeout_s=30, message="the live book in the OMS's cache")
            account = f"acct-{uuid.uuid4().hex[:10]}"
            deposit = await client.post(
                f"/accounts/{account}/paper/deposits",
                json={"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex},
                headers=OPERATOR,
            )
            assert deposit.status_code == 201, deposit.text
            body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD"}
            bought = await client.post(
                "/orders", json={**body, "side": "buy", "type": "market", "quantity": "0.01"}, headers=OPERATOR
            )
        finally:
            stop.set()
            await asyncio.wait_for(feed, 30)
    assert bought.status_code == 201, bought.text
    order = bought.json()
    assert order["status"] == "filled"
    assert Decimal("44000") < Decimal(order["average_fill_price"]) < Decimal("47000")
