"""Binance's user data stream against the protocol fake: executionReport events reach the listeners without REST
polling, a fill reported twice is told once, and fills made while the stream was down arrive by the REST
reconciliation run on reconnection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import AetherSettings
from shared.db import sessionmaker_for
from shared.domain.fees import AccountFeeSchedules
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.marketdata import BookSnapshot, Level, Trade
from shared.venues.base import VenueFill, VenueOrder, VenueOrderRequest, VenueOrderStatus, VenueUpdate
from shared.venues.binance.user_stream import BinanceUserStream
from shared.venues.paper import PaperVenue
from tests.contract.conftest import FakeClock, instrument, unique_symbol
from tests.helpers import eventually
from tests.kit.binance import BinanceKit, binance_kit

USD = Asset("USD")
Streaming = tuple[BinanceKit, AccountId, BinanceUserStream, list[VenueUpdate]]


@pytest.fixture
async def kit(engine: AsyncEngine, settings: AetherSettings) -> AsyncIterator[BinanceKit]:
    symbol = unique_symbol()
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={symbol: instrument(symbol)},
        fee_schedules=AccountFeeSchedules(),
        clock=FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC)),
        name="binance-fake",
    )
    await venue.restore()
    async with binance_kit(venue, settings) as made:
        yield made


def _symbol(kit: BinanceKit) -> Symbol:
    return Symbol(next(iter(kit.fake.venue._instruments)))


async def _print(kit: BinanceKit, price: str, qty: str) -> None:
    trade = Trade(
        venue="test",
        symbol=_symbol(kit),
        trade_id=uuid.uuid4().hex[:8],
        price=Decimal(price),
        qty=Decimal(qty),
        side=OrderSide.SELL,
        timestamp=datetime.now(UTC),
    )
    await kit.fake.venue.on_trade(trade)


async def _resting_buy(kit: BinanceKit, account: AccountId, quantity: str = "1") -> VenueOrder:
    request = VenueOrderRequest(
        account_id=account,
        client_order_id=ClientOrderId(f"c-{uuid.uuid4().hex[:16]}"),
        symbol=_symbol(kit),
        side=OrderSide.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(quantity),
        limit_price=Decimal("100.5"),
        trigger_price=None,
        time_in_force=TimeInForce.GTC,
        post_only=False,
    )
    return await kit.adapter.submit(request)


@pytest.fixture
async def streaming(
    kit: BinanceKit,
) -> AsyncIterator[tuple[BinanceKit, AccountId, BinanceUserStream, list[VenueUpdate]]]:
    account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    kit.ensure_account(account)
    await kit.fake.venue.deposit(account, USD, Decimal(10_000), uuid.uuid4().hex)
    book = BookSnapshot(
        venue="test",
        symbol=_symbol(kit),
        bids=[Level(price=Decimal("100.0"), qty=Decimal(1))],
        asks=[Level(price=Decimal("101.0"), qty=Decimal(1))],
        timestamp=datetime.now(UTC),
        sequence=1,
    )
    await kit.fake.venue.on_book_snapshot(book)
    heard: list[VenueUpdate] = []

    async def listen(update: VenueUpdate) -> None:
        heard.append(update)

    kit.adapter.subscribe(listen)
    stream = BinanceUserStream(kit.adapter, account, url=kit.fake.ws_url, initial_backoff_s=0.05)
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        await eventually(lambda: _true(bool(kit.fake.streams)), timeout_s=10, message="the user stream connected")
        yield kit, account, stream, heard
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=10)


async def _true(value: bool) -> bool:
    return value


def _fills(heard: list[VenueUpdate]) -> list[VenueFill]:
    return [u for u in heard if isinstance(u, VenueFill)]


async def test_execution_reports_reach_listeners_without_rest_polling(streaming: Streaming) -> None:
    kit, account, stream, heard = streaming
    order = await _resting_buy(kit, account)
    polls = kit.fake.seen.calls.get("GET /api/v3/myTrades", 0)

    await _print(kit, "100.0", "2")
    await eventually(lambda: _true(len(_fills(heard)) == 1), timeout_s=10, message="the fill arrived by the stream")

    (fill,) = _fills(heard)
    assert (fill.client_order_id, fill.quantity, fill.price) == (order.client_order_id, Decimal(1), Decimal("100.5"))
    assert kit.fake.seen.calls.get("GET /api/v3/myTrades", 0) == polls  # nothing was polled for it
    assert stream.reports >= 1
    assert len(await kit.adapter.fills_since(account, 0)) == 1
    assert await kit.adapter.sync([account]) == 0  # the REST backstop finds nothing new to tell


async def test_a_trade_reported_twice_is_told_once_and_a_cancel_is_heard(streaming: Streaming) -> None:
    kit, account, stream, heard = streaming
    kit.fake.duplicate_reports = 1
    filled = await _resting_buy(kit, account)
    await _print(kit, "100.0", "2")
    await eventually(lambda: _true(stream.reports >= 2), timeout_s=10, message="both reports arrived")
    resting = await _resting_buy(kit, account)

    await kit.adapter.cancel(account, resting.client_order_id)
    await eventually(
        lambda: _true(any(isinstance(u, VenueOrder) and u.status is VenueOrderStatus.CANCELED for u in heard)),
        timeout_s=10,
        message="the cancel was heard",
    )
    assert [f.client_order_id for f in _fills(heard)] == [filled.client_order_id]


async def test_fills_while_the_stream_is_down_arrive_by_reconciliation_on_reconnect(streaming: Streaming) -> None:
    kit, account, stream, heard = streaming
    order = await _resting_buy(kit, account)
    await kit.fake.drop_user_streams()
    kit.fake.listen_keys.clear()  # the fake forgets the key: nothing more is streamed to the old one
    await _print(kit, "100.0", "2")

    await eventually(
        lambda: _true(len(_fills(heard)) == 1), timeout_s=10, message="the fill arrived after reconnecting"
    )
    assert stream.stats.connections >= 2
    assert [f.client_order_id for f in _fills(heard)] == [order.client_order_id]
