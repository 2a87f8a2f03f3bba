"""A PaperVenue driven directly (no Kafka feed) on a fake clock: how the paper venue tests build it, its
requests, books and prints, and read its USD balance."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, cast

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.domain.fees import AccountFeeSchedules
from shared.domain.matching import LatencyModel
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.marketdata import BookSnapshot, Level, Trade
from shared.venues.base import VenueOrderRequest, VenueUpdate
from shared.venues.paper import PaperVenue
from tests.contract.conftest import FakeClock, instrument

USD = Asset("USD")
START = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def make_venue(
    sessions: Any,
    symbol: Symbol,
    clock: FakeClock,
    latency: LatencyModel | None = None,
    heard: list[Any] | None = None,
    fee_schedules: AccountFeeSchedules | None = None,
) -> PaperVenue:
    venue = PaperVenue(
        cast(async_sessionmaker[AsyncSession], sessions),
        instruments={symbol: instrument(symbol)},
        fee_schedules=fee_schedules or AccountFeeSchedules(),
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
