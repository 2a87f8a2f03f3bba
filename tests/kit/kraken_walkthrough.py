"""README walkthrough: trade through the Kraken protocol fake with the real Kraken adapter.

`python -m tests.kit.kraken_walkthrough` (after `aether migrate`, with AETHER_DATABASE_URL and AETHER_REDIS_URL
set): serves the fake on loopback over the paper engine (schema `paper`, account `acct-kraken-demo-<n>`), mounts an
API key pair as AETHER_ACCOUNT_SECRETS_DIR does, and trades BTC/USD through `KrakenVenue`: every call below is a
signed Kraken REST request (nonce from Redis, API-Sign checked by the fake).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from datetime import UTC, datetime
from decimal import Decimal

from shared.config import AetherSettings
from shared.db import create_engine, sessionmaker_for
from shared.domain.fees import AccountFeeSchedules
from shared.domain.types import AccountId, Asset, ClientOrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.marketdata import BookSnapshot, Level
from shared.venues.base import VenueOrderRequest
from shared.venues.instruments import KRAKEN
from shared.venues.paper import PaperVenue
from tests.kit.kraken import kraken_kit

BTC_USD = Symbol("BTC/USD")


def _order(account: AccountId, side: OrderSide, qty: str, price: str | None) -> VenueOrderRequest:
    return VenueOrderRequest(
        account_id=account,
        client_order_id=ClientOrderId(f"demo-{uuid.uuid4().hex[:12]}"),
        symbol=BTC_USD,
        side=side,
        type=OrderType.MARKET if price is None else OrderType.LIMIT,
        quantity=Decimal(qty),
        limit_price=None if price is None else Decimal(price),
        trigger_price=None,
        time_in_force=TimeInForce.GTC,
        post_only=False,
    )


async def main() -> None:
    """Serve the fake, fund an account, rest a limit, take liquidity, cancel, and print what Kraken answered."""
    settings = AetherSettings()
    engine = create_engine(settings, application_name="kraken-walkthrough")
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments={BTC_USD: KRAKEN.spec(BTC_USD)},
        fee_schedules=AccountFeeSchedules(),
        clock=lambda: datetime.now(UTC),
        name="kraken-fake",
    )
    await venue.restore()
    account = AccountId(f"acct-kraken-demo-{os.getpid()}")
    try:
        async with kraken_kit(venue, settings) as kit:
            kit.ensure_account(account)
            kraken = kit.adapter
            print(f"Kraken fake at {kit.fake.url}; key mounted under {kit.secrets_dir}/{account}")  # noqa: T201
            await venue.deposit(account, Asset("USD"), Decimal(10_000), uuid.uuid4().hex)
            book = BookSnapshot(
                venue="kraken",
                symbol=BTC_USD,
                bids=[Level(price=Decimal("60000.0"), qty=Decimal("0.5"))],
                asks=[Level(price=Decimal("60000.1"), qty=Decimal("0.5"))],
                timestamp=datetime.now(UTC),
                sequence=1,
            )
            await venue.on_book_snapshot(book)
            resting = await kraken.submit(_order(account, OrderSide.BUY, "0.01", "59000.0"))
            print("AddOrder limit  ->", resting.venue_order_id, resting.status.value)  # noqa: T201
            taken = await kraken.submit(_order(account, OrderSide.BUY, "0.02", None))
            print("AddOrder market ->", taken.status.value, taken.filled_quantity)  # noqa: T201
            for fill in await kraken.fills_since(account, 0):
                print("TradesHistory   ->", fill.quantity, "@", fill.price, "fee", fill.fee, fill.liquidity.value)  # noqa: T201
            canceled = await kraken.cancel(account, resting.client_order_id)
            print("CancelOrder     ->", canceled.status.value)  # noqa: T201
            for balance in await kraken.balances(account):
                print("BalanceEx       ->", balance.asset, balance.total, "available", balance.available)  # noqa: T201
            print("CancelAllOrdersAfter ->", await kraken.refresh_dead_man(account))  # noqa: T201
            print("calls seen by the fake:", kit.fake.seen.calls)  # noqa: T201
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(main())
