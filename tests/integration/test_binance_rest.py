"""The Binance REST adapter's fault cases against its protocol fake (loopback HTTP) and the real database.

Shown here (issue 13): an ambiguous submit resolved by query and never resubmitted; rate-limited requests (429 with
Retry-After, and the weight counter exhausted) retried after the venue's wait or failed as temporary; a timestamp
outside recvWindow (clock skew) resynchronised; Ed25519 keys trading; duplicate fills told once; credentials
failing closed.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.config import AetherSettings
from shared.db import sessionmaker_for
from shared.domain.fees import AccountFeeSchedules
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, TimeInForce
from shared.marketdata import BookSnapshot, Level, Trade
from shared.venues.base import (
    AmbiguousOutcome,
    TemporaryError,
    VenueFill,
    VenueOperationalError,
    VenueOrderRequest,
    VenueOrderStatus,
    VenueUpdate,
)
from shared.venues.paper import PaperVenue
from tests.contract.conftest import FakeClock, instrument, unique_symbol
from tests.fakes.binance import Fault
from tests.kit.binance import BinanceKit, binance_kit

USD = Asset("USD")


class Sleeps:
    """Records the waits the adapter asks for (and yields once instead of waiting)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)
        await asyncio.sleep(0)


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
    async with binance_kit(venue, settings, late_answer_s=1.0, retry_after_s=3) as made:
        yield made


def _symbol(kit: BinanceKit) -> str:
    return next(iter(kit.fake.venue._instruments))


async def _funded_market(kit: BinanceKit, *, ed25519: bool = False) -> AccountId:
    account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    kit.ensure_account(account, ed25519=ed25519)
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
    return account


def _limit_buy(kit: BinanceKit, account: AccountId, price: str = "99.0") -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=account,
        client_order_id=ClientOrderId(f"c-{uuid.uuid4().hex[:16]}"),
        symbol=_symbol(kit),  # type: ignore[arg-type]
        side=OrderSide.BUY,
        type=OrderType.LIMIT,
        quantity=Decimal(1),
        limit_price=Decimal(price),
        trigger_price=None,
        time_in_force=TimeInForce.GTC,
        post_only=False,
    )


async def test_ambiguous_submit_is_resolved_by_query_and_never_resubmitted(kit: BinanceKit) -> None:
    account = await _funded_market(kit)
    adapter = await kit.new_adapter(timeout_s=0.3)  # the fake answers after 1 s: the client gives up first
    kit.fake.fail("POST /api/v3/order", Fault.TIMEOUT_AFTER)
    request = _limit_buy(kit, account)

    order = await adapter.submit(request)

    assert (order.client_order_id, order.status) == (request.client_order_id, VenueOrderStatus.OPEN)
    assert kit.fake.seen.calls["POST /api/v3/order"] == 1
    assert kit.fake.seen.new_orders == [request.client_order_id]
    assert adapter.retries["resolve"] == 1


async def test_a_5xx_before_acting_is_ambiguous_and_nothing_is_resubmitted(kit: BinanceKit) -> None:
    account = await _funded_market(kit)
    kit.fake.fail("POST /api/v3/order", Fault.HTTP_503)
    request = _limit_buy(kit, account)

    with pytest.raises(AmbiguousOutcome, match="not found"):
        await kit.adapter.submit(request)

    assert kit.fake.seen.calls["POST /api/v3/order"] == 1
    assert kit.fake.seen.new_orders == []
    assert await kit.adapter.query(account, request.client_order_id) is None


async def test_rate_limited_requests_are_sent_again_after_the_venues_retry_after(kit: BinanceKit) -> None:
    account = await _funded_market(kit)
    sleeps = Sleeps()
    adapter = await kit.new_adapter(sleep=sleeps)
    kit.fake.fail("POST /api/v3/order", Fault.RATE_LIMITED)
    kit.fake.fail("GET /api/v3/account", Fault.RATE_LIMITED)
    request = _limit_buy(kit, account)

    order = await adapter.submit(request)
    balances = {b.asset: b for b in await adapter.balances(account)}

    assert order.status is VenueOrderStatus.OPEN
    assert kit.fake.seen.new_orders == [request.client_order_id]  # the 429 did nothing; the retry placed it once
    assert kit.fake.seen.calls["POST /api/v3/order"] == 2
    assert balances[USD].total == Decimal(10_000)
    assert sleeps.waits == [3.0, 3.0]  # the fake's Retry-After, each time
    assert adapter.retries["rate_limited"] == 2


async def test_an_exhausted_weight_counter_is_refused_with_429_and_a_long_wait_fails_as_temporary(
    kit: BinanceKit,
) -> None:
    account = await _funded_market(kit)
    adapter = await kit.new_adapter(max_wait_s=0.5)
    kit.fake.use_weight(kit.fake.weight_limit)  # other clients on the same IP used the minute's weight

    with pytest.raises(TemporaryError, match="HTTP 429"):
        await adapter.balances(account)

    assert kit.fake.seen.errors[-1003] >= 1
    assert adapter.used_weight > kit.fake.weight_limit  # read from X-MBX-USED-WEIGHT-1M


async def test_weight_reported_by_the_venue_makes_the_adapter_wait_before_sending(kit: BinanceKit) -> None:
    account = await _funded_market(kit)
    sleeps = Sleeps()
    adapter = await kit.new_adapter(sleep=sleeps, weight_limit=100, max_wait_s=120)
    kit.fake.use_weight(90)
    await adapter.balances(account)  # 20 more: the venue now reports > 100 used
    calls = dict(kit.fake.seen.calls)

    await adapter.balances(account)

    assert len(sleeps.waits) == 1  # waited for the next minute first
    assert 0 < sleeps.waits[0] <= 60
    assert kit.fake.seen.calls["GET /api/v3/account"] == calls["GET /api/v3/account"] + 1


async def test_clock_skew_beyond_recv_window_resynchronises_and_succeeds(kit: BinanceKit) -> None:
    account = await _funded_market(kit)
    kit.fake.skew_ms = 20_000  # the venue's clock is 20 s ahead of ours: -1021 until we measure it again

    balances = await kit.adapter.balances(account)

    assert {b.asset for b in balances} == {USD}
    assert kit.fake.seen.errors[-1021] == 1
    assert kit.adapter.retries["timestamp"] == 1


async def test_ed25519_keys_sign_trading_calls(kit: BinanceKit) -> None:
    account = await _funded_market(kit, ed25519=True)

    order = await kit.adapter.submit(_limit_buy(kit, account))
    canceled = await kit.adapter.cancel(account, order.client_order_id)

    assert canceled.status is VenueOrderStatus.CANCELED
    assert -1022 not in kit.fake.seen.errors


async def test_a_duplicate_fill_in_my_trades_is_told_once(kit: BinanceKit) -> None:
    account = await _funded_market(kit)
    heard: list[VenueUpdate] = []

    async def listen(update: VenueUpdate) -> None:
        heard.append(update)

    kit.adapter.subscribe(listen)
    order = await kit.adapter.submit(_limit_buy(kit, account, price="100.5"))
    trade = Trade(
        venue="test",
        symbol=_symbol(kit),
        trade_id="t1",
        price=Decimal("100.0"),
        qty=Decimal(2),
        side=OrderSide.SELL,
        timestamp=datetime.now(UTC),
    )
    await kit.fake.venue.on_trade(trade)
    kit.fake.fail("GET /api/v3/myTrades", Fault.DUPLICATE_FILL)

    assert await kit.adapter.sync() == 1
    assert await kit.adapter.sync() == 0
    fills = [u for u in heard if isinstance(u, VenueFill)]
    assert [f.client_order_id for f in fills] == [order.client_order_id]
    assert len(await kit.adapter.fills_since(account, 0)) == 1


async def test_a_malformed_answer_to_a_read_is_temporary_and_to_a_submit_is_resolved(kit: BinanceKit) -> None:
    account = await _funded_market(kit)
    kit.fake.fail("GET /api/v3/account", Fault.MALFORMED)
    with pytest.raises(TemporaryError, match="account"):
        await kit.adapter.balances(account)

    kit.fake.fail("POST /api/v3/order", Fault.MALFORMED)  # answered before acting: not found, ambiguous
    with pytest.raises(AmbiguousOutcome):
        await kit.adapter.submit(_limit_buy(kit, account))
    assert kit.fake.seen.new_orders == []


async def test_an_unknown_key_stops_trading_and_missing_keys_are_not_ready(kit: BinanceKit) -> None:
    account = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    folder = kit.secrets_dir / account
    folder.mkdir()
    (folder / "api_key").write_text("k" * 64)
    (folder / "api_secret").write_text("s" * 64)
    with pytest.raises(VenueOperationalError, match="-2015"):
        await kit.adapter.balances(account)

    missing = AccountId(f"acct-{uuid.uuid4().hex[:12]}")
    reasons = await kit.adapter.not_ready([missing])
    assert reasons == {missing: "no exchange credentials"}
