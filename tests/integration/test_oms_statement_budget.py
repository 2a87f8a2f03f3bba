"""What the order path costs in SQL statements (counted with SQLAlchemy's cursor hook), so that a change that adds
round trips per order, or a background pass that grows with the open orders, fails here rather than in the bench
(docs/oms.md, Throughput)."""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.adapters import oms_adapters
from services.oms.consumers import resolve_stale
from services.oms.service import OrderService
from shared.auth.roles import Role
from shared.config import AetherSettings
from tests.helpers import own_database
from tests.kit.auth import token
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket

OPERATOR = token(Role.OPERATOR)
# Statements (BEGIN/COMMIT are not cursor executes) one REST order issues from its request to its answer, the paper
# venue's transaction and the application of the venue's answer included: 44 for a market buy that fills, 30 for a
# resting limit buy (49 and 32 before the round trips docs/oms.md lists were cut). The budget leaves room for a check
# or two, not for a round trip per row.
MARKET_BUY_BUDGET = 48
RESTING_LIMIT_BUDGET = 33

_counting: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar("statements", default=None)


def _record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    seen = _counting.get()
    if seen is not None:
        seen.append(statement)


@contextmanager
def statements() -> Iterator[list[str]]:
    """The statements this task (and what it awaits) executes inside the block; background workers not counted."""
    seen: list[str] = []
    event.listen(Engine, "before_cursor_execute", _record)
    reset = _counting.set(seen)
    try:
        yield seen
    finally:
        _counting.reset(reset)
        event.remove(Engine, "before_cursor_execute", _record)


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "oms_statements") as url:
        yield url


@pytest.fixture
async def engine(module_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(module_database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def oms(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[tuple[httpx.AsyncClient, OrderService]]:
    # The resolver worker is slowed down so that the test's own pass is the one counted.
    async with paper_oms(settings, module_database_url, paper_market, resolver_interval_s=3_600.0) as (app, client):
        yield client, oms_adapters(app.state.runtime).orders


async def _funded(client: httpx.AsyncClient) -> str:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    response = await client.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return account


async def _order(client: httpx.AsyncClient, account: str, **fields: str) -> dict[str, Any]:
    body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD", "side": "buy", **fields}
    response = await client.post("/orders", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def test_one_rest_order_stays_within_its_statement_budget(oms: tuple[httpx.AsyncClient, OrderService]) -> None:
    client, _ = oms
    account = await _funded(client)
    await _order(client, account, type="market", quantity="0.01")  # the account's first order: caches warm
    with statements() as market:
        filled = await _order(client, account, type="market", quantity="0.01")
    with statements() as limit:
        resting = await _order(client, account, type="limit", quantity="0.01", limit_price="90")
    assert (filled["status"], resting["status"]) == ("filled", "accepted")
    assert 0 < len(market) <= MARKET_BUY_BUDGET, len(market)
    assert 0 < len(limit) <= RESTING_LIMIT_BUDGET, len(limit)


async def test_resolver_pass_does_not_grow_with_resting_orders(
    oms: tuple[httpx.AsyncClient, OrderService], engine: AsyncEngine
) -> None:
    """The resolver looks for stale SUBMITTED and PENDING_CANCEL orders with a query each: resting (accepted)
    orders, however many, cost it nothing (it used to read every open order's row each second)."""
    client, service = oms
    account = await _funded(client)
    ids = [(await _order(client, account, type="limit", quantity="0.01", limit_price="90"))["order_id"]]
    age = text("UPDATE oms.orders SET updated_at = updated_at - interval '1 hour' WHERE account_id = :a")
    async with engine.begin() as conn:
        await conn.execute(age, {"a": account})
    with statements() as one_resting:
        assert await resolve_stale(service) == 0
    for _ in range(15):
        ids.append((await _order(client, account, type="limit", quantity="0.01", limit_price="90"))["order_id"])
    async with engine.begin() as conn:
        await conn.execute(age, {"a": account})
    with statements() as many_resting:
        assert await resolve_stale(service) == 0
    assert len(many_resting) == len(one_resting) > 0

    # One of them awaiting its cancel (as when the venue's answer to the cancel was lost) is found and resolved.
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE oms.orders SET status = 'pending_cancel' WHERE order_id = :o"), {"o": ids[3]})
    assert await resolve_stale(service) == 1
