"""The paper venue beyond the contract: its Kafka feed and Redis keys, latency, restarts, storage failures, faults."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, cast

import pytest
import sqlalchemy as sa
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.db import sessionmaker_for
from shared.domain.fees import KRAKEN_SPOT_FEE_SCHEDULE
from shared.domain.matching import LatencyModel
from shared.domain.types import AccountId, Asset, ClientOrderId, Liquidity, OrderSide, OrderType, Symbol, TimeInForce
from shared.events.producer import EventProducer, OutgoingMessage
from shared.marketdata import BookDelta, BookSnapshot, Level, Trade, to_envelope
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueFill,
    VenueOrder,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper import PaperVenue
from shared.venues.paper_feed import PaperFeed, book_key, trade_key
from tests.contract.conftest import FakeClock, instrument, unique_symbol
from tests.fakes.faults import FaultyVenue
from tests.helpers import eventually

USD = Asset("USD")
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


class SwitchableSessions:
    """A sessionmaker stand-in that can be pointed at a database that does not answer."""

    def __init__(self, working: async_sessionmaker[AsyncSession], broken: async_sessionmaker[AsyncSession]) -> None:
        self.working, self.broken = working, broken
        self.down = False

    def __call__(self) -> AsyncSession:
        return (self.broken if self.down else self.working)()


@pytest.fixture
def symbol() -> Symbol:
    return unique_symbol()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def account() -> AccountId:
    return AccountId(f"acct-{uuid.uuid4().hex[:12]}")


@pytest.fixture
async def broken_engine() -> AsyncIterator[AsyncEngine]:
    # Nothing listens on port 9 of localhost: every connection is refused at once.
    engine = create_async_engine(
        "postgresql+psycopg://nobody:nothing@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
    )
    yield engine
    await engine.dispose()


def make_venue(
    sessions: Any, symbol: Symbol, clock: FakeClock, latency: LatencyModel | None = None, heard: list[Any] | None = None
) -> PaperVenue:
    venue = PaperVenue(
        cast(async_sessionmaker[AsyncSession], sessions),
        instruments={symbol: instrument(symbol)},
        fee_schedule=KRAKEN_SPOT_FEE_SCHEDULE,
        clock=clock,
        latency=latency,
    )
    if heard is not None:

        async def listen(update: VenueUpdate) -> None:
            heard.append(update)

        venue.subscribe(listen)
    return venue


def request(
    account: AccountId,
    symbol: Symbol,
    side: OrderSide,
    quantity: str,
    limit_price: str | None = None,
    *,
    post_only: bool = False,
    client_order_id: str | None = None,
) -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=account,
        client_order_id=ClientOrderId(client_order_id or f"c-{uuid.uuid4().hex[:16]}"),
        symbol=symbol,
        side=side,
        type=OrderType.MARKET if limit_price is None else OrderType.LIMIT,
        quantity=Decimal(quantity),
        limit_price=None if limit_price is None else Decimal(limit_price),
        trigger_price=None,
        time_in_force=TimeInForce.GTC,
        post_only=post_only,
    )


def snapshot(symbol: Symbol, bids: list[tuple[str, str]], asks: list[tuple[str, str]]) -> BookSnapshot:
    return BookSnapshot(
        venue="test",
        symbol=symbol,
        bids=[Level(price=Decimal(p), qty=Decimal(q)) for p, q in bids],
        asks=[Level(price=Decimal(p), qty=Decimal(q)) for p, q in asks],
        timestamp=START,
        sequence=1,
    )


def trade(symbol: Symbol, price: str, qty: str, side: OrderSide, trade_id: str = "t1") -> Trade:
    return Trade(
        venue="test",
        symbol=symbol,
        trade_id=trade_id,
        price=Decimal(price),
        qty=Decimal(qty),
        side=side,
        timestamp=START,
    )


async def usd_available(venue: PaperVenue, account: AccountId) -> Decimal:
    return next(b.available for b in await venue.balances(account) if b.asset == USD)


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


async def create_topics(bootstrap: str, names: tuple[str, str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1) for name in names])
    finally:
        await admin.close()


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
    await venue.deposit(account, USD, Decimal("10000"))
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


async def _true(value: bool) -> bool:
    return value


# --- market data rules ----------------------------------------------------------------------------------


async def test_market_order_before_any_book_is_rejected_and_a_limit_rests(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    await venue.deposit(account, USD, Decimal("1000"))

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
    await venue.deposit(account, USD, Decimal("1000"))
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
        await venue.deposit(account, USD, Decimal("-1"))
    assert refused.value.code == "invalid_amount"


async def test_a_market_buy_that_would_cost_more_than_estimated_is_refused_when_funds_run_short(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    other = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    await venue.deposit(other, USD, Decimal("1000"))
    # Exactly what 1 BTC at the displayed best ask costs: 100.00 + taker fee 0.40.
    await venue.deposit(account, USD, Decimal("100.40"))
    await venue.on_book_snapshot(snapshot(symbol, [("99.0", "1")], [("100.0", "1"), ("110.0", "1")]))
    await venue.submit(request(other, symbol, OrderSide.BUY, "1"))  # takes the 100.0 level

    refused = request(account, symbol, OrderSide.BUY, "1")
    with pytest.raises(VenueRejected) as error:
        await venue.submit(refused)  # would fill at 110.0: 110.44 > 100.40

    assert error.value.code == "insufficient_funds"
    assert await venue.query(account, refused.client_order_id) is None
    assert await usd_available(venue, account) == Decimal("100.40")


# --- concurrency ----------------------------------------------------------------------------------------


async def test_concurrent_duplicates_from_two_venue_processes_make_one_order(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    sessions = sessionmaker_for(engine)
    first, second = make_venue(sessions, symbol, clock), make_venue(sessions, symbol, clock)
    await first.deposit(account, USD, Decimal("10000"))
    same = request(account, symbol, OrderSide.BUY, "1", "99.0")

    answers = await asyncio.gather(*(venue.submit(same) for venue in (first, second) * 5))

    assert len({a.venue_order_id for a in answers}) == 1
    assert len(await first.open_orders(account)) == 1
    # Reserved once: 99.00 + 0.40.
    assert await usd_available(first, account) == Decimal("9900.60")


async def test_fills_of_one_account_on_two_symbols_get_increasing_sequences(
    engine: AsyncEngine, clock: FakeClock, account: AccountId
) -> None:
    one, two = unique_symbol(), unique_symbol()
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={one: instrument(one), two: instrument(two)},
        fee_schedule=KRAKEN_SPOT_FEE_SCHEDULE,
        clock=clock,
    )
    await venue.deposit(account, USD, Decimal("100000"))
    for symbol in (one, two):
        await venue.on_book_snapshot(snapshot(symbol, [("99.0", "50")], [("100.0", "50")]))

    await asyncio.gather(
        *(venue.submit(request(account, symbol, OrderSide.BUY, "0.1")) for _ in range(10) for symbol in (one, two))
    )

    fills = await venue.fills_since(account, 0)
    assert len(fills) == 20
    assert [f.sequence for f in fills] == sorted({f.sequence for f in fills})
    # 20 x (0.1 x 100.0 = 10.00 + taker fee 0.04) = 200.80 USD spent.
    assert await usd_available(venue, account) == Decimal("100000") - Decimal("200.80")


async def test_submits_queued_behind_one_symbol_commit_together_and_each_gets_its_own_answer(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock
) -> None:
    commits = 0

    def count(_: Any) -> None:
        nonlocal commits
        commits += 1

    sa.event.listen(engine.sync_engine, "commit", count)
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    rich, poor = AccountId(f"rich-{uuid.uuid4().hex[:8]}"), AccountId(f"poor-{uuid.uuid4().hex[:8]}")
    await venue.deposit(rich, USD, Decimal("100000"))
    await venue.deposit(poor, USD, Decimal("50"))
    await venue.on_book_snapshot(snapshot(symbol, [("100.0", "10")], [("101.0", "10")]))
    commits = 0
    resting = [request(rich, symbol, OrderSide.BUY, "1", f"{90 + i}.0") for i in range(10)]
    repeated = request(rich, symbol, OrderSide.BUY, "2", "80.0", client_order_id=f"same-{uuid.uuid4().hex[:8]}")
    crossing = request(rich, symbol, OrderSide.BUY, "1", "101.0", post_only=True)
    too_big = request(poor, symbol, OrderSide.BUY, "1", "99.0")
    taker = request(rich, symbol, OrderSide.BUY, "0.5")

    answers = await asyncio.gather(
        *(venue.submit(r) for r in (*resting, repeated, repeated, crossing, too_big, taker, repeated)),
        return_exceptions=True,
    )

    assert commits < 10  # 16 submits, a few transactions
    assert [a.status for a in answers[:10] if isinstance(a, VenueOrder)] == [VenueOrderStatus.OPEN] * 10
    repeats = [answers[10], answers[11], answers[15]]
    assert all(isinstance(a, VenueOrder) for a in repeats)
    assert len({a.venue_order_id for a in repeats if isinstance(a, VenueOrder)}) == 1
    assert isinstance(answers[12], VenueRejected)
    assert answers[12].code == "post_only_would_cross"
    assert isinstance(answers[13], VenueRejected)
    assert answers[13].code == "insufficient_funds"
    assert isinstance(answers[14], VenueOrder)
    assert (answers[14].status, answers[14].filled_quantity) == (VenueOrderStatus.FILLED, Decimal("0.5"))
    assert len(await venue.open_orders(rich)) == 11
    # Held by the 10 resting orders: 90 + 91 + ... + 99 = 945 plus taker fees rounded up per order
    # 0.36 + 0.37 + 0.37 + 0.38 + 0.38 + 0.38 + 0.39 + 0.39 + 0.40 + 0.40 = 3.82; by the repeated one
    # 2 x 80 = 160 + 0.64; spent by the taker 0.5 x 101 = 50.50 + 0.202 -> 0.21.
    # 100000 - 948.82 - 160.64 - 50.71 = 98839.83.
    assert await usd_available(venue, rich) == Decimal("98839.83")
    assert await usd_available(venue, poor) == Decimal("50")


async def test_a_stop_loss_waits_for_its_trigger_then_sells_into_the_bids(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), symbol, clock)
    base = Asset(symbol.split("/")[0])
    await venue.deposit(account, base, Decimal("1"))
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
    # 0.4 @ 94 = 37.60 (fee 0.1504 -> 0.16) + 0.6 @ 93 = 55.80 (fee 0.2232 -> 0.23): 93.40 - 0.39 = 93.01 USD.
    assert await usd_available(venue, account) == Decimal("93.01")


async def test_a_triggered_stop_loss_limit_rests_as_a_limit_across_a_restart(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    sessions = sessionmaker_for(engine)
    venue = make_venue(sessions, symbol, clock)
    await venue.deposit(account, Asset(symbol.split("/")[0]), Decimal("1"))
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


# --- latency and restarts -------------------------------------------------------------------------------


async def test_with_latency_an_order_takes_effect_later_and_a_late_post_only_cross_is_canceled(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    heard: list[VenueUpdate] = []
    latency = LatencyModel(submit_delay=timedelta(milliseconds=200), cancel_delay=timedelta(milliseconds=200))
    venue = make_venue(sessionmaker_for(engine), symbol, clock, latency, heard)
    await venue.deposit(account, USD, Decimal("10000"))
    await venue.on_book_snapshot(snapshot(symbol, [("100.0", "1")], [("101.0", "1")]))

    maker = await venue.submit(request(account, symbol, OrderSide.BUY, "1", "100.1"))
    late_cross = await venue.submit(request(account, symbol, OrderSide.BUY, "1", "100.3", post_only=True))
    assert (maker.status, late_cross.status) == (VenueOrderStatus.OPEN, VenueOrderStatus.OPEN)
    # Before the submit delay passes, a print through the price fills nothing: the order is not there yet.
    await venue.on_trade(trade(symbol, "100.0", "5", OrderSide.SELL))
    assert [u for u in heard if isinstance(u, VenueFill)] == []

    clock.advance(timedelta(milliseconds=150))
    await venue.on_book_snapshot(snapshot(symbol, [("100.0", "1")], [("100.2", "1")]))  # ask now below 100.3
    clock.advance(timedelta(milliseconds=100))
    await venue.on_trade(trade(symbol, "100.0", "5", OrderSide.SELL, "t2"))

    fills = [u for u in heard if isinstance(u, VenueFill)]
    assert [(f.client_order_id, f.quantity, f.price, f.liquidity) for f in fills] == [
        (maker.client_order_id, Decimal("1"), Decimal("100.1"), Liquidity.MAKER)
    ]
    closed = {u.client_order_id: u for u in heard if isinstance(u, VenueOrder)}
    assert closed[late_cross.client_order_id].status is VenueOrderStatus.CANCELED
    assert closed[late_cross.client_order_id].reason == "post_only_would_cross"


async def test_restore_cancels_a_delayed_market_order_the_engine_never_ran(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    sessions = sessionmaker_for(engine)
    latency = LatencyModel(submit_delay=timedelta(seconds=1))
    venue = make_venue(sessions, symbol, clock, latency)
    await venue.deposit(account, USD, Decimal("1000"))
    await venue.on_book_snapshot(snapshot(symbol, [("100.0", "1")], [("101.0", "5")]))
    pending = await venue.submit(request(account, symbol, OrderSide.BUY, "1"))
    resting = await venue.submit(request(account, symbol, OrderSide.BUY, "1", "90.0"))
    assert pending.status is VenueOrderStatus.OPEN

    restarted = make_venue(sessions, symbol, clock, latency)
    assert await restarted.restore() == 1  # the limit order; the market order is closed instead

    seen = await restarted.query(account, pending.client_order_id)
    assert seen is not None
    assert (seen.status, seen.reason) == (VenueOrderStatus.CANCELED, "venue_restarted")
    assert [o.client_order_id for o in await restarted.open_orders(account)] == [resting.client_order_id]
    # Only the limit order's 90.00 + 0.36 remains reserved.
    assert await usd_available(restarted, account) == Decimal("909.64")


# --- storage failures -----------------------------------------------------------------------------------


async def test_storage_down_means_ambiguous_writes_and_temporary_reads(
    engine: AsyncEngine, broken_engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(broken_engine), symbol, clock)
    with pytest.raises(AmbiguousOutcome):
        await venue.submit(request(account, symbol, OrderSide.BUY, "1", "99.0"))
    with pytest.raises(TemporaryError):
        await venue.query(account, ClientOrderId("x"))
    with pytest.raises(TemporaryError):
        await venue.fills_since(account, 0)


async def test_fills_lost_to_a_failed_write_are_not_half_applied_and_the_order_still_fills(
    engine: AsyncEngine, broken_engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    sessions = SwitchableSessions(sessionmaker_for(engine), sessionmaker_for(broken_engine))
    venue = make_venue(sessions, symbol, clock)
    await venue.deposit(account, USD, Decimal("10000"))
    await venue.on_book_snapshot(snapshot(symbol, [("100.0", "1")], [("101.0", "1")]))
    order = await venue.submit(request(account, symbol, OrderSide.BUY, "1", "100.5"))

    sessions.down = True
    with pytest.raises(AmbiguousOutcome):
        await venue.on_trade(trade(symbol, "100.0", "5", OrderSide.SELL))  # the engine filled, the write failed
    sessions.down = False

    seen = await venue.query(account, order.client_order_id)
    assert seen is not None
    assert (seen.status, seen.filled_quantity) == (VenueOrderStatus.OPEN, Decimal("0"))
    await venue.on_trade(trade(symbol, "100.0", "5", OrderSide.SELL, "t2"))  # rebuilt from the database first
    fills = await venue.fills_since(account, 0)
    assert [(f.client_order_id, f.quantity) for f in fills] == [(order.client_order_id, Decimal("1"))]


async def test_database_checks_refuse_a_negative_or_over_reserved_balance(
    engine: AsyncEngine, account: AccountId
) -> None:
    venue = make_venue(sessionmaker_for(engine), unique_symbol(), FakeClock(START))
    await venue.deposit(account, USD, Decimal("5"))
    async with engine.connect() as conn:
        for statement in (
            "UPDATE paper.balances SET total = -1 WHERE account_id = :a",
            "UPDATE paper.balances SET reserved = 6 WHERE account_id = :a",
        ):
            with pytest.raises(sa.exc.IntegrityError):
                await conn.execute(sa.text(statement), {"a": account})
            await conn.rollback()


# --- fault injection ------------------------------------------------------------------------------------


async def test_faulty_venue_times_out_after_sending_and_refuses_before_sending(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    inner = make_venue(sessionmaker_for(engine), symbol, clock)
    await inner.deposit(account, USD, Decimal("10000"))
    always_ambiguous = FaultyVenue(inner, random.Random(7), ambiguous_rate=1.0)
    always_refused = FaultyVenue(inner, random.Random(7), temporary_rate=1.0)

    sent = request(account, symbol, OrderSide.BUY, "1", "99.0")
    with pytest.raises(AmbiguousOutcome):
        await always_ambiguous.submit(sent)
    assert await always_ambiguous.query(account, sent.client_order_id) is not None  # it did reach the venue

    refused = request(account, symbol, OrderSide.BUY, "1", "98.0")
    with pytest.raises(TemporaryError):
        await always_refused.submit(refused)
    assert await inner.query(account, refused.client_order_id) is None  # it never left

    with pytest.raises(AmbiguousOutcome):
        await always_ambiguous.cancel(account, sent.client_order_id)
    seen = await inner.query(account, sent.client_order_id)
    assert seen is not None
    assert seen.status is VenueOrderStatus.CANCELED
    assert (always_ambiguous.counts.total_ambiguous, always_refused.counts.total_temporary) == (2, 1)


async def test_faulty_venue_draws_are_seeded(engine: AsyncEngine, symbol: Symbol, clock: FakeClock) -> None:
    inner = make_venue(sessionmaker_for(engine), symbol, clock)
    account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    await inner.deposit(account, USD, Decimal("100000"))

    async def run(seed: int) -> list[str]:
        faulty = FaultyVenue(inner, random.Random(seed), ambiguous_rate=0.3, temporary_rate=0.2)
        outcomes = []
        for _ in range(30):
            try:
                await faulty.submit(request(account, symbol, OrderSide.BUY, "0.01", "50.0"))
                outcomes.append("ok")
            except AmbiguousOutcome:
                outcomes.append("ambiguous")
            except TemporaryError:
                outcomes.append("temporary")
        return outcomes

    first, second = await run(11), await run(11)
    assert first == second
    assert {"ok", "ambiguous", "temporary"} <= set(first)
