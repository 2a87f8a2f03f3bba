"""The Coinbase adapter's fault cases against its protocol fake (loopback HTTP + WebSocket) and the real database.

Shown (issue 13): an ambiguous submit (timeout or 5xx after sending) resolved by query and never resubmitted; a
rate-limited request retried after Coinbase's wait; a duplicate fill told once; the JWT checked by the venue (a bad
key stops the account, it never falls back); the user channel delivering fills, REST reconciliation the backstop.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db import sessionmaker_for
from shared.domain.fees import AccountFeeSchedules
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.marketdata import BookSnapshot, Level
from shared.venues.base import (
    AmbiguousOutcome,
    VenueFill,
    VenueNotReady,
    VenueOperationalError,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueUpdate,
)
from shared.venues.coinbase.adapter import CoinbaseVenue
from shared.venues.coinbase.auth import new_ec_secret, new_ed25519_secret
from shared.venues.coinbase.ws_public import CoinbaseUserStream
from shared.venues.paper import PaperVenue
from tests.contract.conftest import FakeClock, instrument, unique_symbol
from tests.fakes.coinbase import Fault
from tests.kit.coinbase import CoinbaseKit, coinbase_kit

USD = Asset("USD")


@pytest.fixture
async def kit(engine: AsyncEngine) -> AsyncIterator[CoinbaseKit]:
    symbol = unique_symbol()
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={symbol: instrument(symbol)},
        fee_schedules=AccountFeeSchedules(),
        clock=FakeClock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC)),
        name="coinbase-fake",
    )
    await venue.restore()
    async with coinbase_kit(venue, late_answer_s=1.0, retry_after_s=0.05) as made:
        yield made


def _symbol(kit: CoinbaseKit) -> Symbol:
    return next(iter(kit.fake.venue._instruments))


async def _funded_market(kit: CoinbaseKit, secret: str | None = None) -> AccountId:
    account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    kit.ensure_account(account, secret)
    await kit.fake.venue.deposit(account, USD, Decimal(10_000), uuid.uuid4().hex)
    await _book(kit, ask_qty="1")
    return account


async def _book(kit: CoinbaseKit, ask_qty: str, ask: str = "101.0") -> None:
    snapshot = BookSnapshot(
        venue="test",
        symbol=_symbol(kit),
        bids=[Level(price=Decimal("100.0"), qty=Decimal(1))],
        asks=[Level(price=Decimal(ask), qty=Decimal(ask_qty))],
        timestamp=datetime.now(UTC),
        sequence=int(datetime.now(UTC).timestamp() * 1e6),
    )
    await kit.fake.venue.on_book_snapshot(snapshot)


def _buy(kit: CoinbaseKit, account: AccountId, price: str | None = "99.0") -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=account,
        client_order_id=ClientOrderId(f"c-{uuid.uuid4().hex[:16]}"),
        symbol=_symbol(kit),
        side=OrderSide.BUY,
        type=OrderType.LIMIT if price else OrderType.MARKET,
        quantity=Decimal("0.5"),
        limit_price=Decimal(price) if price else None,
        trigger_price=None,
        time_in_force=TimeInForce.GTC,
        post_only=False,
    )


@pytest.mark.parametrize("fault", [Fault.TIMEOUT_AFTER, Fault.HTTP_502_AFTER, Fault.HTTP_503])
async def test_an_ambiguous_submit_is_resolved_by_query_and_never_resubmitted(kit: CoinbaseKit, fault: Fault) -> None:
    account = await _funded_market(kit)
    adapter = await kit.new_adapter(timeout_s=0.3)  # the fake answers after 1 s: the client gives up first
    request = _buy(kit, account)
    if fault is Fault.HTTP_503:  # 5xx: Coinbase may or may not have acted; here it had not
        kit.fake.fail("create", fault)
        with pytest.raises(AmbiguousOutcome):
            await adapter.submit(request)
        assert kit.fake.seen.creates == []
        assert await adapter.query(account, request.client_order_id) is None
        return
    kit.fake.fail("create", fault)

    order = await adapter.submit(request)

    assert order.client_order_id == request.client_order_id
    assert order.status is VenueOrderStatus.OPEN
    assert kit.fake.seen.calls["create"] == 1  # one Create Order, no resubmission under any id
    assert kit.fake.seen.creates == [request.client_order_id]
    assert adapter.retries["resolve"] == 1


async def test_an_ambiguous_cancel_is_resolved_by_query(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit)
    order = await kit.adapter.submit(_buy(kit, account))
    kit.fake.fail("cancel", Fault.HTTP_502_AFTER)

    canceled = await kit.adapter.cancel(account, order.client_order_id)

    assert canceled.status is VenueOrderStatus.CANCELED
    assert kit.fake.seen.calls["cancel"] == 1
    assert await kit.adapter.open_orders(account) == []


async def test_a_rate_limited_request_is_retried_after_the_wait(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit)
    kit.fake.fail("create", Fault.RATE_LIMITED)
    kit.fake.fail("accounts", Fault.RATE_LIMITED, Fault.RATE_LIMITED)
    request = _buy(kit, account)

    order = await kit.adapter.submit(request)
    balances = await kit.adapter.balances(account)

    assert order.status is VenueOrderStatus.OPEN
    assert kit.fake.seen.creates == [request.client_order_id]  # the 429 created nothing; the retry created once
    assert kit.fake.seen.calls["create"] == 2
    assert kit.fake.seen.calls["accounts"] == 3
    assert kit.adapter.retries["rate_limited"] == 3
    assert {b.asset: b.available for b in balances}[USD] < Decimal(10_000)


async def test_the_request_budget_answers_429_and_the_adapter_waits_it_out(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit)
    kit.fake.requests_per_s = 3

    found = await asyncio.gather(*(kit.adapter.balances(account) for _ in range(6)))

    assert all(found)
    assert kit.fake.seen.errors["RATE_LIMIT_EXCEEDED"] >= 3
    assert kit.adapter.retries["rate_limited"] == kit.fake.seen.errors["RATE_LIMIT_EXCEEDED"]


async def test_a_duplicate_fill_is_told_once(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit)
    heard: list[VenueUpdate] = []

    async def listen(update: VenueUpdate) -> None:
        heard.append(update)

    kit.adapter.subscribe(listen)
    await kit.adapter.submit(_buy(kit, account, price=None))
    kit.fake.fail("fills", Fault.DUPLICATE_FILL)

    fills = await kit.adapter.fills_since(account, 0)
    await kit.adapter.sync([account])

    assert len(fills) == 1
    assert len([u for u in heard if isinstance(u, VenueFill)]) == 1


async def test_an_ed25519_key_trades_too(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit, secret=new_ed25519_secret())
    order = await kit.adapter.submit(_buy(kit, account))
    assert order.status is VenueOrderStatus.OPEN


async def test_a_key_the_venue_does_not_know_stops_the_account(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit)
    (kit.secrets_dir / account / "api_secret").write_text(new_ec_secret())  # rotated here, not at the venue
    adapter = await kit.new_adapter()
    with pytest.raises(VenueOperationalError, match="UNAUTHENTICATED"):
        await adapter.balances(account)
    assert kit.fake.seen.creates == []


async def test_an_unusable_secret_keeps_the_account_not_ready(kit: CoinbaseKit) -> None:
    account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    folder = kit.secrets_dir / account
    folder.mkdir()
    (folder / "api_key").write_text("organizations/x/apiKeys/y")
    (folder / "api_secret").write_text("not a key")
    with pytest.raises(VenueNotReady):
        await kit.adapter.balances(account)
    assert (await kit.adapter.not_ready([account]))[account]


async def test_the_user_channel_delivers_a_resting_order_s_fill(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit)
    adapter: CoinbaseVenue = kit.adapter
    heard: list[VenueUpdate] = []
    changed = asyncio.Event()

    async def listen(update: VenueUpdate) -> None:
        heard.append(update)
        changed.set()

    adapter.subscribe(listen)
    stream = CoinbaseUserStream(
        account, lambda: adapter.websocket_jwt(account), adapter.on_user_update, url=kit.fake.ws_url
    )
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop, reconnect_s=0.05))
    try:
        await asyncio.wait_for(kit.fake.user_subscribed.wait(), 10)
        order = await adapter.submit(_buy(kit, account, price="100.5"))  # rests between bid and ask
        assert not heard
        await _book(kit, ask_qty="1", ask="100.5")  # the market comes to it: the paper engine fills it
        assert await kit.fake.tell_users() == 1
        async with asyncio.timeout(10):
            while not any(isinstance(u, VenueFill) for u in heard):
                changed.clear()
                await changed.wait()
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
    fills = [u for u in heard if isinstance(u, VenueFill)]
    assert [f.client_order_id for f in fills] == [order.client_order_id]
    assert stream.stats.connections == 1
    assert kit.fake.seen.calls.get("fills", 0) >= 1  # the update was turned into fills over REST, not guessed


async def test_rest_reconciliation_is_the_backstop_when_the_user_channel_is_down(kit: CoinbaseKit) -> None:
    account = await _funded_market(kit)
    heard: list[VenueUpdate] = []

    async def listen(update: VenueUpdate) -> None:
        heard.append(update)

    kit.adapter.subscribe(listen)
    order = await kit.adapter.submit(_buy(kit, account, price="100.5"))
    await _book(kit, ask_qty="1", ask="100.5")  # filled while no user channel runs

    assert await kit.adapter.sync([account]) == 1
    assert [u.client_order_id for u in heard if isinstance(u, VenueFill)] == [order.client_order_id]
    final = [u for u in heard if not isinstance(u, VenueFill)]
    assert [o.status for o in final] == [VenueOrderStatus.FILLED]
