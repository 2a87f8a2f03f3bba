"""Withdrawals from paper accounts (issue 17, item 4) through the real OMS on the paper venue, with real
PostgreSQL, Redis and Kafka: the ledger and the venue are debited once per reference, one `withdrawal` goes out on
the cash-flow topic, the account's audit chain records it; an amount the free balance does not cover (reserved
money included) moves nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.oms.adapters import OmsAdapters, oms_adapters
from services.oms.ledger_repository import LedgerRepository
from services.oms.tables import withdrawals
from shared.config import AetherSettings
from shared.contracts.cashflows import OMS_CASHFLOW_EVENTS
from shared.domain.types import AccountId, Asset
from shared.venues.base import VenueRejected, Withdrawals
from tests.helpers import eventually, own_database
from tests.integration.test_oms_transfers import OPERATOR, funded, usd
from tests.integration.test_oms_venue_process import platform
from tests.kit.events import TopicReader
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "oms_withdrawals") as url:
        yield url


@pytest.fixture
async def oms(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[tuple[httpx.AsyncClient, OmsAdapters]]:
    async with paper_oms(settings, module_database_url, paper_market) as (app, client):
        yield client, oms_adapters(app.state.runtime)


async def withdraw(client: httpx.AsyncClient, account: str, amount: str, reference: str) -> httpx.Response:
    return await client.post(
        f"/accounts/{account}/paper/withdrawals",
        json={"asset": "USD", "amount": amount, "reference": reference},
        headers=OPERATOR,
    )


async def audited(database_url: str, account: str) -> list[tuple[str, str, str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT action, details->>'reference', details->>'amount' FROM audit.audit_log"
                    " WHERE chain = :c AND action = 'paper.withdrawal' ORDER BY position"
                ),
                {"c": f"oms:{account}"},
            )
            return [(a, r, m) for a, r, m in rows]
    finally:
        await engine.dispose()


async def test_a_withdrawal_debits_the_venue_and_the_ledger_once_per_reference(
    oms: tuple[httpx.AsyncClient, OmsAdapters], kafka_bootstrap: str, module_database_url: str
) -> None:
    client, adapters = oms
    account = await funded(client, "1000")
    reference = f"w-{uuid.uuid4().hex}"
    first = await withdraw(client, account, "250.5", reference)
    assert first.status_code == 201, first.text
    assert first.json()["balance"]["total"] == "749.5"
    again = await withdraw(client, account, "250.5", reference)
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert await usd(client, adapters, account) == ("749.5", Decimal("749.5"))
    conflict = await withdraw(client, account, "1", reference)
    assert conflict.status_code == 409, conflict.text
    assert conflict.json()["error"]["code"] == "withdrawal_reference_conflict"

    async with TopicReader(kafka_bootstrap, OMS_CASHFLOW_EVENTS) as reader:

        async def mine() -> list[tuple[str, str, str]]:
            await reader.until(0, timeout_s=1)
            flows = [e.payload for e in reader.seen if e.payload.get("reference") == reference]
            return [(p["account_id"], p["kind"], p["amount"]) for p in flows]

        async def published() -> bool:
            return len(await mine()) >= 1

        await eventually(published, timeout_s=30, message="withdrawal cash flow published")
        assert await mine() == [(account, "withdrawal", "250.5")]
    assert await audited(module_database_url, account) == [("paper.withdrawal", reference, "250.5")]


async def test_a_withdrawal_the_venue_debited_before_a_crash_is_completed_once_by_reconciliation(
    oms: tuple[httpx.AsyncClient, OmsAdapters], module_database_url: str
) -> None:
    client, adapters = oms
    account = await funded(client, "100")
    # The crash window: recorded pending, debited at the venue, the ledger not yet.
    async with adapters.orders.ctx.account_transaction(account) as uow:
        await LedgerRepository(uow.session).record_deposit(
            account, "w-crash", "USD", Decimal(30), "user:dora", datetime.now(UTC), table=withdrawals
        )
    assert isinstance(adapters.venue, Withdrawals)
    await adapters.venue.withdraw(AccountId(account), Asset("USD"), Decimal(30), "w-crash")
    report = await adapters.orders.reconcile()
    assert report.deposits_completed >= 1
    assert report.balance_adjustments == 0  # the withdrawal in flight was not taken for drift
    assert await usd(client, adapters, account) == ("70", Decimal(70))
    assert await audited(module_database_url, account) == [("paper.withdrawal", "w-crash", "30")]
    repeat = await withdraw(client, account, "30", "w-crash")
    assert repeat.status_code == 201, repeat.text
    assert await usd(client, adapters, account) == ("70", Decimal(70))


async def test_a_withdrawal_the_free_balance_does_not_cover_moves_nothing(
    oms: tuple[httpx.AsyncClient, OmsAdapters], module_database_url: str
) -> None:
    client, adapters = oms
    account = await funded(client, "100")
    refused = await withdraw(client, account, "100.01", "w-too-much")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "insufficient_balance"
    order = await client.post(
        "/orders",
        json={
            "account_id": account,
            "client_order_id": uuid.uuid4().hex,
            "symbol": "BTC/USD",
            "side": "buy",
            "type": "limit",
            "quantity": "1",
            "limit_price": "50",
        },
        headers=OPERATOR,
    )
    assert order.status_code == 201, order.text
    reserved = await withdraw(client, account, "60", "w-reserved")  # 100 total, at least 50 held by the order
    assert reserved.status_code == 422, reserved.text
    assert reserved.json()["error"]["code"] == "insufficient_balance"
    assert await usd(client, adapters, account) == ("100", Decimal("100"))
    assert await audited(module_database_url, account) == []
    retried = await withdraw(client, account, "40", "w-reserved")  # a refused reference left no record behind
    assert retried.status_code == 201, retried.text
    assert await usd(client, adapters, account) == ("60", Decimal("60"))


async def test_bad_withdrawals_are_refused_naming_why(oms: tuple[httpx.AsyncClient, OmsAdapters]) -> None:
    client, _ = oms
    unknown = await withdraw(client, f"acct-{uuid.uuid4().hex[:10]}", "1", "w-unknown")
    assert unknown.status_code == 404, unknown.text
    assert unknown.json()["error"]["code"] == "account_not_found"
    account = await funded(client, "10")
    zero = await withdraw(client, account, "0", "w-zero")
    assert zero.status_code == 422, zero.text
    assert "amount" in zero.text


async def test_the_venue_process_debits_a_reference_once_over_http(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    """`POST /paper/accounts/{account}/withdrawals` through the HTTP client the OMS uses with a venue process."""
    async with platform(settings, module_database_url, paper_market) as process:
        account = AccountId(await process.funded("300"))
        venue = process.venue_client()
        try:
            debited = await venue.withdraw(account, Asset("USD"), Decimal("120"), "r-1")
            again = await venue.withdraw(account, Asset("USD"), Decimal("120"), "r-1")
            assert (debited.total, debited.available) == (Decimal(180), Decimal(180))
            assert again.total == Decimal(180)
            with pytest.raises(VenueRejected) as refused:
                await venue.withdraw(account, Asset("USD"), Decimal("181"), "r-2")
            assert refused.value.code == "insufficient_balance"
            with pytest.raises(VenueRejected) as reused:
                await venue.withdraw(account, Asset("USD"), Decimal("1"), "r-1")
            assert reused.value.code == "reference_reused"
            assert {b.asset: b.total for b in await venue.balances(account)}["USD"] == Decimal(180)
        finally:
            await venue.close()
