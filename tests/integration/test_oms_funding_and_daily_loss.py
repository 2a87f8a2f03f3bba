"""Paper deposits over REST are idempotent by reference, and the daily-loss limit reads the realized PnL kept per
account and UTC day in each fill's transaction (not a replay of every fill). Real PostgreSQL, Redis and Kafka; the
kit's book: bid 99.9, ask 100; taker fee 0.40 %."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.cashflows import OMS_CASHFLOW_EVENTS, CashFlowKind, CashFlowRecorded
from tests.helpers import own_database
from tests.kit.auth import token
from tests.kit.controls import applied
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket

OPERATOR = token(Role.OPERATOR, subject="olga")


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_funding") as url:
        yield url


@pytest.fixture
async def engine(module_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(module_database_url)
    yield engine
    await engine.dispose()


class Oms:
    def __init__(
        self, client: httpx.AsyncClient, redis: Redis, engine: AsyncEngine, market: PaperMarket, database_url: str
    ) -> None:
        self.market = market
        self.database_url = database_url
        self.client = client
        self.redis = redis
        self.engine = engine

    async def deposit(self, account: str, **body: Any) -> httpx.Response:
        return await self.client.post(f"/accounts/{account}/paper/deposits", json=body, headers=OPERATOR)

    async def order(self, account: str, **fields: Any) -> httpx.Response:
        body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD", **fields}
        return await self.client.post("/orders", json=body, headers=OPERATOR)

    async def scalar(self, sql: str, **params: Any) -> Any:
        async with self.engine.connect() as conn:
            return await conn.scalar(text(sql), params)


@pytest.fixture
async def oms(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket, engine: AsyncEngine
) -> AsyncIterator[Oms]:
    async with paper_oms(settings, module_database_url, paper_market) as (_app, client):
        yield Oms(client, paper_market.redis, engine, paper_market, module_database_url)


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:10]}"


async def test_a_repeated_deposit_reference_credits_once_and_answers_the_same(oms: Oms) -> None:
    account = new_account()
    first = await oms.deposit(account, asset="USD", amount="1000", reference="wire-1")
    assert first.status_code == 201, first.text
    again = await oms.deposit(account, asset="USD", amount="1000.00", reference="wire-1")
    assert (again.status_code, again.json()) == (201, first.json())
    assert first.json()["balance"]["total"] == "1000"
    assert await oms.scalar("SELECT total FROM paper.balances WHERE account_id = :a", a=account) == 1000
    assert await oms.scalar("SELECT total FROM oms.balances WHERE account_id = :a", a=account) == 1000
    assert await oms.scalar("SELECT count(*) FROM paper.deposits WHERE account_id = :a", a=account) == 1
    entries = "SELECT count(*) FROM audit.audit_log WHERE action = 'paper.deposit' AND target = :t"
    assert await oms.scalar(entries, t=f"{account}/USD") == 1
    # One CashFlowRecorded for the reports service, from the deposit's transaction (docs/reports.md).
    flows = "SELECT payload -> 'payload' FROM oms.outbox WHERE topic = :topic AND key = :a"
    async with oms.engine.connect() as conn:
        published = (await conn.execute(text(flows), {"topic": OMS_CASHFLOW_EVENTS, "a": account})).scalars().all()
    assert len(published) == 1
    flow = CashFlowRecorded.model_validate(published[0])
    assert (flow.kind, flow.asset, flow.amount, flow.reference) == (CashFlowKind.DEPOSIT, "USD", 1000, "wire-1")


async def test_a_deposit_reference_reused_for_another_amount_or_asset_is_a_conflict(oms: Oms) -> None:
    account = new_account()
    assert (await oms.deposit(account, asset="USD", amount="1000", reference="wire-2")).status_code == 201
    for body in ({"asset": "USD", "amount": "999"}, {"asset": "BTC", "amount": "1000"}):
        conflict = await oms.deposit(account, reference="wire-2", **body)
        assert conflict.status_code == 409, conflict.text
        assert conflict.json()["error"]["code"] == "deposit_reference_conflict"
    assert await oms.scalar("SELECT sum(total) FROM oms.balances WHERE account_id = :a", a=account) == 1000


async def test_a_deposit_without_a_reference_is_refused(oms: Oms) -> None:
    response = await oms.deposit(new_account(), asset="USD", amount="1000")
    assert response.status_code == 422, response.text


async def test_the_daily_realized_pnl_is_kept_per_utc_day_and_read_by_the_daily_loss_limit(oms: Oms) -> None:
    account = new_account()
    assert (await oms.deposit(account, asset="USD", amount="10000", reference="seed")).status_code == 201
    assert (await oms.order(account, side="buy", type="market", quantity="2")).status_code == 201
    assert (await oms.order(account, side="sell", type="market", quantity="1")).status_code == 201  # at a loss
    today = datetime.now(UTC).date()
    day_pnl = "SELECT realized_pnl FROM oms.daily_realized_pnl WHERE account_id = :a AND day = :d"
    realized = await oms.scalar(day_pnl, a=account, d=today)
    # every fill of the account is today's: the day's figure is the position's realized PnL
    assert realized < 0
    assert realized == await oms.scalar("SELECT realized_pnl FROM oms.positions WHERE account_id = :a", a=account)

    await applied(oms.database_url, await oms.market.controls.set_limits(account, {"daily_loss_limit": "5"}))
    assert (await oms.order(account, side="buy", type="market", quantity="0.1")).status_code == 201
    async with oms.engine.begin() as conn:  # a heavy loss yesterday does not count today
        await conn.execute(
            text("INSERT INTO oms.daily_realized_pnl (account_id, day, realized_pnl) VALUES (:a, :d, -1000)"),
            {"a": account, "d": today - timedelta(days=1)},
        )
    assert (await oms.order(account, side="buy", type="market", quantity="0.1")).status_code == 201
    async with oms.engine.begin() as conn:  # today's figure is what the check reads
        await conn.execute(
            text("UPDATE oms.daily_realized_pnl SET realized_pnl = -6 WHERE account_id = :a AND day = :d"),
            {"a": account, "d": today},
        )
    denied = await oms.order(account, side="buy", type="market", quantity="0.1")
    assert denied.status_code == 422, denied.text
    assert denied.json()["error"]["code"] == "daily_loss_limit"
