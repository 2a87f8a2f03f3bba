"""Transfers between two paper accounts (issue 17, item 4) through the real OMS on the paper venue, with real
PostgreSQL, Redis and Kafka: both ledgers and the venue move once per reference, `transfer_out` / `transfer_in`
go out on the cash-flow topic, both audit chains record it; an uncovered or conflicting transfer moves nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.oms.adapters import OmsAdapters, oms_adapters
from services.oms.errors import TransferReferenceConflict, TransferRejected
from services.oms.transfer_repository import TransferStatus
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.cashflows import OMS_CASHFLOW_EVENTS
from shared.domain.types import AccountId, Asset
from shared.venues.base import VenueRejected
from tests.helpers import eventually, own_database
from tests.integration.test_oms_venue_process import platform
from tests.kit.auth import token
from tests.kit.events import TopicReader
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket

OPERATOR = token(Role.OPERATOR)


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "oms_transfers") as url:
        yield url


@pytest.fixture
async def oms(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[tuple[httpx.AsyncClient, OmsAdapters]]:
    async with paper_oms(settings, module_database_url, paper_market) as (app, client):
        yield client, oms_adapters(app.state.runtime)


async def funded(client: httpx.AsyncClient, usd: str) -> str:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    response = await client.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": usd, "reference": uuid.uuid4().hex},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return account


async def usd(client: httpx.AsyncClient, adapters: OmsAdapters, account: str) -> tuple[str, Decimal]:
    """The OMS's USD total (REST) and the venue's."""
    response = await client.get("/balances", params={"account_id": account}, headers=OPERATOR)
    ledger = {row["asset"]: row["total"] for row in response.json()["items"]}["USD"]
    venue = {b.asset: b.total for b in await adapters.venue.balances(AccountId(account))}["USD"]
    return ledger, venue


async def audit(database_url: str, account: str) -> list[tuple[str, str]]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT action, details->>'reference' FROM audit.audit_log WHERE chain = :c ORDER BY position"),
                {"c": f"oms:{account}"},
            )
            return [(a, r) for a, r in rows if a.startswith("paper.transfer")]
    finally:
        await engine.dispose()


async def test_a_transfer_moves_both_ledgers_and_the_venue_once(
    oms: tuple[httpx.AsyncClient, OmsAdapters], kafka_bootstrap: str, module_database_url: str
) -> None:
    client, adapters = oms
    company, director = await funded(client, "1000"), await funded(client, "100")
    reference = f"proposal-{uuid.uuid4().hex}"
    done = await adapters.transfers.transfer(
        company, director, "USD", Decimal("250.5"), "user:dora", reference=reference
    )
    assert done.status is TransferStatus.APPLIED
    again = await adapters.transfers.transfer(
        company, director, "USD", Decimal("250.5"), "user:dora", reference=reference
    )
    assert again.status is TransferStatus.APPLIED
    assert await usd(client, adapters, company) == ("749.5", Decimal("749.5"))
    assert await usd(client, adapters, director) == ("350.5", Decimal("350.5"))
    with pytest.raises(TransferReferenceConflict):
        await adapters.transfers.transfer(company, director, "USD", Decimal("1"), "user:dora", reference=reference)

    async with TopicReader(kafka_bootstrap, OMS_CASHFLOW_EVENTS) as reader:

        async def both() -> list[tuple[str, str, str, str | None]]:
            await reader.until(0, timeout_s=1)
            mine = [e.payload for e in reader.seen if e.payload.get("reference") == reference]
            return [(p["account_id"], p["kind"], p["amount"], p["counterparty_account_id"]) for p in mine]

        async def published() -> bool:
            return len(await both()) >= 2

        await eventually(published, timeout_s=30, message="transfer cash flows published")
        assert sorted(await both()) == sorted(
            [(company, "transfer_out", "250.5", director), (director, "transfer_in", "250.5", company)]
        )
    assert await audit(module_database_url, company) == [("paper.transfer_out", reference)]
    assert await audit(module_database_url, director) == [("paper.transfer_in", reference)]


async def test_an_uncovered_transfer_moves_nothing_and_leaves_no_record(
    oms: tuple[httpx.AsyncClient, OmsAdapters], module_database_url: str
) -> None:
    client, adapters = oms
    company, director = await funded(client, "100"), await funded(client, "5")
    with pytest.raises(TransferRejected) as refused:
        await adapters.transfers.transfer(company, director, "USD", Decimal("100.01"), "user:dora", reference="p-1x")
    assert refused.value.code == "insufficient_balance"
    with pytest.raises(TransferRejected) as same:
        await adapters.transfers.transfer(company, company, "USD", Decimal("1"), "user:dora", reference="p-1y")
    assert same.value.code == "same_account"
    assert await usd(client, adapters, company) == ("100", Decimal("100"))
    assert await usd(client, adapters, director) == ("5", Decimal("5"))
    assert await audit(module_database_url, company) == []


async def test_the_venue_process_moves_a_reference_once_over_http(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    """`POST /paper/accounts/{source}/transfers` through the HTTP client the OMS uses with a venue process."""
    async with platform(settings, module_database_url, paper_market) as process:
        source, destination = await process.funded("300"), await process.funded("0.5")
        venue = process.venue_client()
        try:
            moved = await venue.transfer(AccountId(source), AccountId(destination), Asset("USD"), Decimal("120"), "r-1")
            again = await venue.transfer(AccountId(source), AccountId(destination), Asset("USD"), Decimal("120"), "r-1")
            assert [(b.account_id, b.total) for b in moved] == [(source, Decimal(180)), (destination, Decimal("120.5"))]
            assert [b.total for b in again] == [Decimal(180), Decimal("120.5")]
            with pytest.raises(VenueRejected) as refused:
                await venue.transfer(AccountId(source), AccountId(destination), Asset("USD"), Decimal("181"), "r-2")
            assert refused.value.code == "insufficient_balance"
            with pytest.raises(VenueRejected) as reused:
                await venue.transfer(AccountId(source), AccountId(destination), Asset("USD"), Decimal("1"), "r-1")
            assert reused.value.code == "reference_reused"
            assert {b.asset: b.total for b in await venue.balances(AccountId(source))}["USD"] == Decimal(180)
        finally:
            await venue.close()
