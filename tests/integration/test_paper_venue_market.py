"""The paper venue beyond the contract, as a market: its Kafka feed and Redis keys, the market-data rules,
requests it refuses, stop losses waiting for their trigger (also across a restart).

Concurrency, latency, restarts, storage failures and faults are in test_paper_venue_resilience.py.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import sessionmaker_for
from shared.domain.fees import AccountFeeSchedules, FeeSchedule, FeeTier
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.events.producer import EventProducer, OutgoingMessage
from shared.marketdata import BookDelta, Level, to_envelope
from shared.venues.base import VenueFill, VenueOrderRequest, VenueOrderStatus, VenueRejected, VenueUpdate
from shared.venues.paper_feed import PaperFeed, book_key, trade_key
from tests.contract.conftest import FakeClock
from tests.helpers import eventually
from tests.kit.paper import create_topics
from tests.kit.paper_venue import START, USD, make_venue, request, snapshot, trade, usd_available

# --- the Kafka feed and Redis -------------------------------------------------------------------------


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def topics() -> tuple[str, str]:
    run = uuid.uuid4().hex[:12]
    return f"test.{run}.book-events.v1", f"test.{run}.trade-events.v1"


async def test_feed_drives_the_venue_and_writes_the_latest_book_and_trade_to_redis(
    engine: AsyncEngine,
    redis: Redis,
    kafka_bootstrap: str,
    topics: tuple[str, str],
    symbol: Symbol,
    clock: FakeClock,
    account: AccountId,
) -> None:
    heard: list[VenueUpdate] = []
    venue = make_venue(sessionmaker_for(engine), symbol, clock, heard=heard)
    await venue.deposit(account, USD, Decimal("10000"), uuid.uuid4().hex)
    resting = await venue.submit(request(account, symbol, OrderSide.BUY, "1", "100.5"))
    book_topic, trade_topic = topics
    await create_topics(kafka_bootstrap, topics)
    feed = PaperFeed(venue, redis=redis, bootstrap=kafka_bootstrap, book_topic=book_topic, trade_topic=trade_topic)
    stop = asyncio.Event()
    task = asyncio.create_task(feed.run(stop))
    producer = EventProducer(kafka_bootstrap, client_id="test-paper-feed")
    await producer.start()
    try:
        await eventually(lambda: _true(feed.ready.is_set()), timeout_s=15, message="feed assigned")
        levels = [(f"{100 - i}.0", "1") for i in range(12)], [(f"{101 + i}.0", "2") for i in range(12)]
        await producer.send(book_topic, to_envelope(snapshot(symbol, *levels), "test"), key=symbol)
        await producer.send_raw(OutgoingMessage(book_topic, symbol, b"not an envelope"))
        delta = BookDelta(
            venue="test",
            symbol=symbol,
            asks=[Level(price=Decimal("101.0"), qty=Decimal("0")), Level(price=Decimal("100.9"), qty=Decimal("3"))],
            timestamp=START,
            sequence=2,
        )
        await producer.send(book_topic, to_envelope(delta, "test"), key=symbol)
        await producer.send(trade_topic, to_envelope(trade(symbol, "100.0", "2", OrderSide.SELL), "test"), key=symbol)

        async def filled() -> bool:
            seen = await venue.query(account, resting.client_order_id)
            return seen is not None and seen.status is VenueOrderStatus.FILLED

        await eventually(filled, timeout_s=15, message="resting order filled by the trade on Kafka")

        async def book_in_redis() -> dict[str, Any]:
            raw = await redis.get(book_key(symbol))
            book = json.loads(raw) if raw else {}
            return book if book.get("asks", [{}])[0].get("price") == "100.9" else {}

        book = await eventually(book_in_redis, timeout_s=15, message="book in Redis")
        assert len(book["bids"]) == 10  # top 10 of the 12 levels
        assert book["bids"][0] == {"price": "100", "qty": "1"}
        assert book["asks"][:2] == [{"price": "100.9", "qty": "3"}, {"price": "102", "qty": "2"}]
        last_trade = json.loads(await redis.get(trade_key(symbol)) or b"{}")
        assert (last_trade["price"], last_trade["qty"], last_trade["side"]) == ("100", "2", "sell")
        assert feed.stats.undecodable == 1
        assert [u.client_order_id for u in heard if isinstance(u, VenueFill)] == [resting.client_order_id]
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await producer.stop()
        await redis.delete(book_key(symbol), trade_key(symbol))


@dataclass(frozen=True)
class _Record:
    """The fields of an aiokafka ConsumerRecord that the feed reads."""

    value: bytes
    topic: str = "test.trade-events.v1"
    offset: int = 0


async def test_a_trade_sent_twice_with_one_event_id_fills_once(
    engine: AsyncEngine, redis: Redis, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    # The replay sends a batch again after a broker outage: records the broker had stored come twice.
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    await venue.deposit(account, USD, Decimal("10000"), uuid.uuid4().hex)
    resting = await venue.submit(request(account, symbol, OrderSide.BUY, "2", "100.5"))
    feed = PaperFeed(venue, redis=redis, bootstrap="127.0.0.1:1")
    levels = [(f"{100 - i}.0", "1") for i in range(3)], [(f"{101 + i}.0", "2") for i in range(3)]
    book = _Record(to_envelope(snapshot(symbol, *levels), "test").to_bytes())
    printed = _Record(to_envelope(trade(symbol, "100.0", "1", OrderSide.SELL), "test").to_bytes())
    try:
        await feed.handle_records([book, printed])
        await feed.handle_records([book, printed])
        seen = await venue.query(account, resting.client_order_id)
        assert seen is not None
        assert seen.filled_quantity == Decimal("1")
        assert feed.stats.duplicates == 2
    finally:
        await redis.delete(book_key(symbol), trade_key(symbol))


async def _true(value: bool) -> bool:
    return value


# --- market data rules ----------------------------------------------------------------------------------


async def test_market_order_before_any_book_is_rejected_and_a_limit_rests(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    await venue.deposit(account, USD, Decimal("1000"), uuid.uuid4().hex)

    with pytest.raises(VenueRejected) as refused:
        await venue.submit(request(account, symbol, OrderSide.BUY, "1"))

    assert refused.value.code == "no_market_data"
    order = await venue.submit(request(account, symbol, OrderSide.BUY, "1", "99.0"))
    assert order.status is VenueOrderStatus.OPEN


async def test_a_delta_before_any_snapshot_is_ignored(engine: AsyncEngine, symbol: Symbol, clock: FakeClock) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    delta = BookDelta(
        venue="test", symbol=symbol, asks=[Level(price=Decimal("101"), qty=Decimal("1"))], timestamp=START, sequence=1
    )
    await venue.on_book_delta(delta)
    assert not venue.has_market_data(symbol)
    await venue.on_book_snapshot(snapshot(symbol, [("100", "1")], [("102", "1")]))
    await venue.on_book_delta(delta)
    book = venue.book(symbol)
    assert book is not None
    assert book.best_ask == Decimal("101")


async def test_invalid_requests_are_rejected_with_codes(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    await venue.deposit(account, USD, Decimal("1000"), uuid.uuid4().hex)
    cases = [
        (request(account, Symbol("NOPE/USD"), OrderSide.BUY, "1", "10.0"), "unknown_instrument"),
        (request(account, symbol, OrderSide.BUY, "0.000000001", "10.0"), "invalid_quantity"),
        (request(account, symbol, OrderSide.BUY, "1", "10.05"), "invalid_price"),
        (request(account, symbol, OrderSide.BUY, "1", post_only=True), "invalid_order"),
    ]
    for bad, code in cases:
        with pytest.raises(VenueRejected) as refused:
            await venue.submit(bad)
        assert refused.value.code == code
    with pytest.raises(VenueRejected) as refused:
        await venue.deposit(account, USD, Decimal("-1"), uuid.uuid4().hex)
    assert refused.value.code == "invalid_amount"


async def test_a_market_buy_that_would_cost_more_than_estimated_is_refused_when_funds_run_short(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    other = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    await venue.deposit(other, USD, Decimal("1000"), uuid.uuid4().hex)
    # Exactly what 1 BTC at the displayed best ask costs: 100.00 + taker fee 0.40.
    await venue.deposit(account, USD, Decimal("100.40"), uuid.uuid4().hex)
    await venue.on_book_snapshot(snapshot(symbol, [("99.0", "1")], [("100.0", "1"), ("110.0", "1")]))
    await venue.submit(request(other, symbol, OrderSide.BUY, "1"))  # takes the 100.0 level

    refused = request(account, symbol, OrderSide.BUY, "1")
    with pytest.raises(VenueRejected) as error:
        await venue.submit(refused)  # would fill at 110.0: 110.44 > 100.40

    assert error.value.code == "insufficient_funds"
    assert await venue.query(account, refused.client_order_id) is None
    assert await usd_available(venue, account) == Decimal("100.40")


async def test_a_stop_loss_waits_for_its_trigger_then_sells_into_the_bids(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    base = Asset(symbol.split("/")[0])
    await venue.deposit(account, base, Decimal("1"), uuid.uuid4().hex)
    await venue.on_book_snapshot(snapshot(symbol, [("100.0", "1")], [("101.0", "1")]))
    stop = VenueOrderRequest(
        account_id=account,
        client_order_id=ClientOrderId(f"stop-{uuid.uuid4().hex[:8]}"),
        symbol=symbol,
        side=OrderSide.SELL,
        type=OrderType.STOP_LOSS,
        quantity=Decimal("1"),
        limit_price=None,
        trigger_price=Decimal("95.0"),
        time_in_force=TimeInForce.GTC,
        post_only=False,
    )
    assert (await venue.submit(stop)).status is VenueOrderStatus.OPEN
    await venue.on_trade(trade(symbol, "99.0", "1", OrderSide.SELL))
    await venue.on_book_snapshot(snapshot(symbol, [("94.0", "0.4"), ("93.0", "1")], [("96.0", "1")]))

    await venue.on_trade(trade(symbol, "94.5", "1", OrderSide.SELL, "t2"))  # through the trigger

    seen = await venue.query(account, stop.client_order_id)
    assert seen is not None
    assert (seen.status, seen.filled_quantity) == (VenueOrderStatus.FILLED, Decimal("1"))
    # 0.4 @ 94 = 37.60 (fee 0.1504) + 0.6 @ 93 = 55.80 (fee 0.2232), USD kept to 0.0001: 93.40 - 0.3736 = 93.0264.
    assert await usd_available(venue, account) == Decimal("93.0264")


async def test_a_triggered_stop_loss_limit_rests_as_a_limit_across_a_restart(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    sessions = sessionmaker_for(engine)
    venue = make_venue(sessions, symbol, clock)
    await venue.deposit(account, Asset(symbol.split("/")[0]), Decimal("1"), uuid.uuid4().hex)
    await venue.on_book_snapshot(snapshot(symbol, [("93.0", "5")], [("96.0", "5")]))
    stop = VenueOrderRequest(
        account_id=account,
        client_order_id=ClientOrderId(f"sll-{uuid.uuid4().hex[:8]}"),
        symbol=symbol,
        side=OrderSide.SELL,
        type=OrderType.STOP_LOSS_LIMIT,
        quantity=Decimal("1"),
        limit_price=Decimal("94.0"),
        trigger_price=Decimal("95.0"),
        time_in_force=TimeInForce.GTC,
        post_only=False,
    )
    await venue.submit(stop)
    await venue.on_trade(trade(symbol, "95.0", "1", OrderSide.SELL))  # fires; bids at 93 are below 94: it rests

    restarted = make_venue(sessions, symbol, clock)
    assert await restarted.restore() == 1
    await restarted.on_book_snapshot(snapshot(symbol, [("93.0", "5")], [("96.0", "5")]))
    # A print above 94 fills the resting limit; had it gone back to waiting, 94.5 <= 95 would only fire it again.
    await restarted.on_trade(trade(symbol, "94.5", "1", OrderSide.BUY, "t2"))

    seen = await restarted.query(account, stop.client_order_id)
    assert seen is not None
    assert (seen.status, seen.filled_quantity) == (VenueOrderStatus.FILLED, Decimal("1"))


async def test_a_limit_buy_releases_its_price_improvement_as_it_fills(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    await venue.deposit(account, USD, Decimal("1000"), uuid.uuid4().hex)
    await venue.on_book_snapshot(snapshot(symbol, [("99.0", "1")], [("100.0", "1")]))
    order = await venue.submit(request(account, symbol, OrderSide.BUY, "2", "101.0"))
    assert (order.status, order.filled_quantity) == (VenueOrderStatus.OPEN, Decimal("1"))
    # Reserved 2 x 101 = 202 + 0.808 taker fee; 1 filled at 100 for 100 + 0.4 fee. The resting 1 @ 101.0 needs
    # 101 + 0.404 = 101.404: the other 1.004 is released now, not when the order ends.
    assert await usd_available(venue, account) == Decimal("798.196")  # 1000 - 100.4 - 101.404


async def test_an_account_trades_under_its_own_fee_schedule(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    vip = FeeSchedule((FeeTier(Decimal(0), Decimal("0.0002"), Decimal("0.001")),))
    venue = make_venue(
        sessionmaker_for(engine), symbol, clock, fee_schedules=AccountFeeSchedules().with_schedule(account, vip)
    )
    await venue.deposit(account, USD, Decimal("1000"), uuid.uuid4().hex)
    await venue.on_book_snapshot(snapshot(symbol, [("99.0", "1")], [("100.0", "1")]))
    await venue.submit(request(account, symbol, OrderSide.BUY, "1"))
    fills = await venue.fills_since(account, 0)
    assert [f.fee for f in fills] == [Decimal("0.1")]  # 100 x 0.10 % (Kraken's entry taker rate would be 0.40 %)
    assert await usd_available(venue, account) == Decimal("899.9")
