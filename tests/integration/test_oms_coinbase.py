"""One OMS, a paper account and a Coinbase account (`AETHER_ACCOUNT_VENUES=...=coinbase`): the Coinbase account's
order goes to the Coinbase protocol fake (CDP JWT checked there), its fill reaches the OMS, a Coinbase account
without keys is not ready with the reason (never paper)."""

from __future__ import annotations

import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.oms.config import OmsSettings
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.db import create_engine, sessionmaker_for
from shared.domain.types import AccountId, Asset
from shared.venues.coinbase.adapter import CoinbaseVenue
from shared.venues.coinbase.auth import new_ec_secret
from shared.venues.paper import PaperVenue
from shared.venues.router import VenueRouter
from tests.fakes.coinbase import CoinbaseFake
from tests.helpers import eventually, own_database
from tests.integration.test_oms_venue_choice import OPERATOR, balances, fill_venues, oms, order
from tests.kit.factories import book_snapshot
from tests.kit.oms import oms_settings
from tests.kit.paper import PaperMarket

USD = Asset("USD")


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_coinbase") as url:
        yield url


@pytest.fixture(scope="module")
def exchange_database_url(database_url: str) -> Iterator[str]:
    """The Coinbase fake's matching engine keeps its books apart from the OMS's paper venue."""
    with own_database(database_url, "coinbase_exchange") as url:
        yield url


@contextlib.asynccontextmanager
async def coinbase(settings: OmsSettings, database_url: str) -> AsyncIterator[tuple[CoinbaseFake, Path]]:
    engine = create_engine(settings.model_copy(update={"database_url": SecretStr(database_url)}))
    venue = PaperVenue(
        sessionmaker_for(engine),
        instruments=settings.instrument_specs(),
        fee_schedules=settings.fee_schedules(),
        clock=utc_now,
        name="coinbase-fake",
    )
    try:
        await venue.restore()
        await venue.on_book_snapshot(book_snapshot())  # bid 99.9, ask 100, like the paper market
        fake = CoinbaseFake(venue)
        with tempfile.TemporaryDirectory(prefix="coinbase-secrets-") as folder:
            async with fake.serve():
                yield fake, Path(folder)
    finally:
        await engine.dispose()


async def test_a_coinbase_account_trades_at_coinbase_and_one_without_keys_is_not_ready(
    settings: AetherSettings, module_database_url: str, exchange_database_url: str, paper_market: PaperMarket
) -> None:
    base = oms_settings(settings, module_database_url, paper_market)
    async with coinbase(base, exchange_database_url) as (fake, secrets_dir):
        account = AccountId(f"cb-{uuid.uuid4().hex[:10]}")
        secret = new_ec_secret()
        (secrets_dir / account).mkdir()
        (secrets_dir / account / "api_key").write_text(fake.register(account, secret))
        (secrets_dir / account / "api_secret").write_text(secret)
        await fake.venue.deposit(account, USD, Decimal(10_000), uuid.uuid4().hex)
        no_keys = AccountId(f"cb-nokeys-{uuid.uuid4().hex[:8]}")
        config = oms_settings(
            settings,
            module_database_url,
            paper_market,
            account_venues=f"{account}=coinbase,{no_keys}=coinbase",
            coinbase_url=fake.url,
            coinbase_timeout_s=5.0,
            coinbase_sync_interval_s=0.2,
            venue_retry_s=0.2,
            account_secrets_dir=secrets_dir,
        )
        async with oms(config, paper_market) as (client, adapters):
            router = adapters.venue
            assert isinstance(router, VenueRouter)
            assert isinstance(router.venues["coinbase"], CoinbaseVenue)
            assert adapters.reconciliation_status.report.not_ready == {no_keys: "no exchange credentials"}
            assert (await balances(client, account))["USD"]["total"] == "10000"

            buy = await order(client, account, side="buy", type="market", quantity="0.5")
            assert buy.status_code == 201, buy.text

            async def filled() -> bool:
                got = await client.get(f"/orders/{buy.json()['order_id']}", headers=OPERATOR)
                return bool(got.json()["status"] == "filled")

            await eventually(filled, message="the Coinbase fill reached the OMS")
            assert fake.seen.creates == [buy.json()["client_order_id"]]
            assert fake.seen.errors.get("UNAUTHENTICATED", 0) == 0  # every request carried a valid JWT
            refused = await order(client, no_keys, side="buy", type="market", quantity="0.5")
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "venue_not_ready"
            assert "no exchange credentials" in refused.json()["error"]["message"]
            assert await router.venues["paper"].open_orders(no_keys) == []  # never fell back to paper
            assert await fill_venues(base, account) == {account: ["coinbase"]}
