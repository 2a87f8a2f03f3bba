"""Stale market data: a market order on a book the feed has not updated for `market_data_max_age_s` is denied with
`stale_market_data` (422, recorded), limit orders still go, and a fresh book lets market orders through again."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal

import httpx
import pytest
from redis.asyncio import Redis

from shared.auth.roles import Role
from shared.clock import utc_now
from shared.config import AetherSettings
from shared.domain.book import OrderBook
from shared.venues.latest_book import book_json, book_key
from tests.helpers import own_database
from tests.kit.auth import token
from tests.kit.factories import ASKS, BIDS, SYMBOL
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket

OPERATOR = token(Role.OPERATOR)
MAX_AGE_S = 30.0


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_stale") as url:
        yield url


@pytest.fixture
async def client(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[httpx.AsyncClient]:
    async with paper_oms(settings, module_database_url, paper_market, market_data_max_age_s=MAX_AGE_S) as (_, client):
        yield client


async def _order(client: httpx.AsyncClient, account: str, **fields: str) -> httpx.Response:
    body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": SYMBOL, "side": "buy", **fields}
    return await client.post("/orders", json=body, headers=OPERATOR)


async def _funded(client: httpx.AsyncClient) -> str:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    response = await client.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": "10000", "reference": uuid.uuid4().hex},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return account


async def _latest_book_aged(redis: Redis, age_s: float) -> None:
    """The latest book as the paper feed writes it, last updated `age_s` ago (a feed that stopped then)."""
    book = OrderBook(SYMBOL)
    book.apply_snapshot(
        [(Decimal(p), Decimal(q)) for p, q in BIDS],
        [(Decimal(p), Decimal(q)) for p, q in ASKS],
        utc_now() - timedelta(seconds=age_s),
    )
    await redis.set(book_key(SYMBOL), book_json(book))


async def test_a_market_order_on_a_stale_book_is_denied_stale_market_data(
    client: httpx.AsyncClient, paper_market: PaperMarket
) -> None:
    account = await _funded(client)
    await _latest_book_aged(paper_market.redis, MAX_AGE_S + 30)

    refused = await _order(client, account, type="market", quantity="0.1")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "stale_market_data"
    assert "stale" in error["message"]
    assert "limit 30 s" in error["message"]
    orders = (await client.get("/orders", params={"account_id": account}, headers=OPERATOR)).json()["items"]
    assert [(o["status"], o["reason"].split(":")[0]) for o in orders] == [("denied", "stale_market_data")]

    limit = await _order(client, account, type="limit", quantity="0.1", limit_price="90")
    assert limit.status_code == 201, limit.text  # a limit order names its own price: not refused

    await _latest_book_aged(paper_market.redis, MAX_AGE_S - 20)  # within the limit
    fresh = await _order(client, account, type="market", quantity="0.1")
    assert fresh.status_code == 201, fresh.text
    assert fresh.json()["status"] == "filled"


async def test_a_book_without_an_update_time_counts_as_stale(
    client: httpx.AsyncClient, paper_market: PaperMarket
) -> None:
    account = await _funded(client)
    await paper_market.redis.set(
        book_key(SYMBOL),
        '{"symbol":"BTC/USD","bids":[{"price":"99","qty":"5"}],"asks":[{"price":"101","qty":"5"}]}',
    )
    refused = await _order(client, account, type="market", quantity="0.1")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "stale_market_data"
