"""The paper venue beyond the contract, under stress: concurrent submits and duplicates, latency and restarts,
storage failures, injected faults.

The Kafka feed, market-data rules and stop losses are in test_paper_venue_market.py.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from shared.db import sessionmaker_for
from shared.domain.fees import AccountFeeSchedules
from shared.domain.matching import LatencyModel
from shared.domain.types import AccountId, ClientOrderId, Liquidity, OrderSide, Symbol
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueFill,
    VenueOrder,
    VenueOrderStatus,
    VenueRejected,
    VenueUpdate,
)
from shared.venues.paper import PaperVenue
from tests.contract.conftest import FakeClock, instrument, unique_symbol
from tests.fakes.faults import FaultyVenue
from tests.kit.paper_venue import START, USD, make_venue, request, snapshot, trade, usd_available


class SwitchableSessions:
    """A sessionmaker stand-in that can be pointed at a database that does not answer."""

    def __init__(self, working: async_sessionmaker[AsyncSession], broken: async_sessionmaker[AsyncSession]) -> None:
        self.working, self.broken = working, broken
        self.down = False

    def __call__(self) -> AsyncSession:
        return (self.broken if self.down else self.working)()


@pytest.fixture
async def broken_engine() -> AsyncIterator[AsyncEngine]:
    # Nothing listens on port 9 of localhost: every connection is refused at once.
    engine = create_async_engine(
        "postgresql+psycopg://nobody:nothing@127.0.0.1:9/none", connect_args={"connect_timeout": 1}
    )
    yield engine
    await engine.dispose()


# --- concurrency ----------------------------------------------------------------------------------------


async def test_concurrent_duplicates_from_two_venue_processes_make_one_order(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    sessions = sessionmaker_for(engine)
    first, second = make_venue(sessions, symbol, clock), make_venue(sessions, symbol, clock)
    await first.deposit(account, USD, Decimal("10000"), uuid.uuid4().hex)
    same = request(account, symbol, OrderSide.BUY, "1", "99.0")

    answers = await asyncio.gather(*(venue.submit(same) for venue in (first, second) * 5))

    assert len({a.venue_order_id for a in answers}) == 1
    assert len(await first.open_orders(account)) == 1
    # Reserved once: 99.00 + 0.396 (USD kept to 0.0001).
    assert await usd_available(first, account) == Decimal("9900.604")


async def test_fills_of_one_account_on_two_symbols_get_increasing_sequences(
    engine: AsyncEngine, clock: FakeClock, account: AccountId
) -> None:
    one, two = unique_symbol(), unique_symbol()
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={one: instrument(one), two: instrument(two)},
        fee_schedules=AccountFeeSchedules(),
        clock=clock,
    )
    await venue.deposit(account, USD, Decimal("100000"), uuid.uuid4().hex)
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
    await venue.deposit(rich, USD, Decimal("100000"), uuid.uuid4().hex)
    await venue.deposit(poor, USD, Decimal("50"), uuid.uuid4().hex)
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
    # Held by the 10 resting orders: 90 + 91 + ... + 99 = 945 plus taker fees 0.40 % of each (exact at 0.0001 USD)
    # 945 x 0.004 = 3.78; by the repeated one 2 x 80 = 160 + 0.64; spent by the taker 0.5 x 101 = 50.50 + 0.202.
    # 100000 - 948.78 - 160.64 - 50.702 = 98839.878.
    assert await usd_available(venue, rich) == Decimal("98839.878")
    assert await usd_available(venue, poor) == Decimal("50")


# --- latency and restarts -------------------------------------------------------------------------------


async def test_with_latency_an_order_takes_effect_later_and_a_late_post_only_cross_is_canceled(
    engine: AsyncEngine, symbol: Symbol, clock: FakeClock, account: AccountId
) -> None:
    heard: list[VenueUpdate] = []
    latency = LatencyModel(submit_delay=timedelta(milliseconds=200), cancel_delay=timedelta(milliseconds=200))
    venue = make_venue(sessionmaker_for(engine), symbol, clock, latency, heard)
    await venue.deposit(account, USD, Decimal("10000"), uuid.uuid4().hex)
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
    await venue.deposit(account, USD, Decimal("1000"), uuid.uuid4().hex)
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
    await venue.deposit(account, USD, Decimal("10000"), uuid.uuid4().hex)
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
    await venue.deposit(account, USD, Decimal("5"), uuid.uuid4().hex)
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
    await inner.deposit(account, USD, Decimal("10000"), uuid.uuid4().hex)
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
    await inner.deposit(account, USD, Decimal("100000"), uuid.uuid4().hex)

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
