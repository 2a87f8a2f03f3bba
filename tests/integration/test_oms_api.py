"""OMS over REST against real PostgreSQL, Redis and Kafka, trading on the paper venue fed through Kafka
(book: bid 99.9, ask 100; fees: taker 0.40 %, maker 0.25 %, the first tier of the Kraken schedule)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.adapters import oms_adapters
from shared.audit import verify_chain
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.domain.types import AccountId, TradingState
from shared.venues.base import VenueAdapter
from tests.helpers import eventually, own_database
from tests.kit.auth import token
from tests.kit.controls import applied
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_api") as url:
        yield url


@pytest.fixture
async def engine(module_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(module_database_url)
    yield engine
    await engine.dispose()


OPERATOR = token(Role.OPERATOR)


class Oms:
    def __init__(self, client: httpx.AsyncClient, venue: VenueAdapter, market: PaperMarket) -> None:
        self.client = client
        self.venue = venue
        self.market = market

    async def order(self, account: str, **fields: Any) -> httpx.Response:
        body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD", **fields}
        return await self.client.post("/orders", json=body, headers=OPERATOR)

    async def balances(self, account: str) -> dict[str, dict[str, str]]:
        response = await self.client.get("/balances", params={"account_id": account}, headers=OPERATOR)
        return {row["asset"]: row for row in response.json()["items"]}


@pytest.fixture
async def oms(settings: AetherSettings, module_database_url: str, paper_market: PaperMarket) -> AsyncIterator[Oms]:
    async with paper_oms(settings, module_database_url, paper_market) as (app, client):
        yield Oms(client, oms_adapters(app.state.runtime).venue, paper_market)


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


async def funded(oms: Oms, usd: str = "10000") -> str:
    account = f"acct-{uuid.uuid4().hex[:10]}"
    response = await oms.client.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": usd, "reference": uuid.uuid4().hex},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    return account


async def test_market_buy_fills_and_moves_the_ledger(oms: Oms) -> None:
    account = await funded(oms)
    response = await oms.order(account, side="buy", type="market", quantity="0.5")
    assert response.status_code == 201, response.text
    order = response.json()
    assert order["status"] == "filled"
    assert order["average_fill_price"] == "100"
    # 0.5 x 100 = 50 USD, taker fee 0.4 % of 50 = 0.20 USD
    balances = await oms.balances(account)
    assert balances["USD"]["total"] == "9949.8"
    assert balances["USD"]["reserved"] == "0"
    assert balances["BTC"]["total"] == "0.5"
    fills = (await oms.client.get("/fills", params={"account_id": account}, headers=OPERATOR)).json()["items"]
    assert [(f["quantity"], f["price"], f["fee"]) for f in fills] == [("0.5", "100", "0.2")]
    positions = (await oms.client.get("/positions", params={"account_id": account}, headers=OPERATOR)).json()["items"]
    # cost basis 50 + 0.20 fee over 0.5 BTC = 100.4 per BTC
    assert positions[0]["quantity"] == "0.5"
    assert positions[0]["average_entry_price"] == "100.4"


async def test_same_client_id_is_idempotent_and_a_different_body_conflicts(oms: Oms) -> None:
    account = await funded(oms)
    body = {"account_id": account, "client_order_id": "dup-1", "symbol": "BTC/USD", "side": "buy"}
    first = await oms.client.post(
        "/orders", json={**body, "type": "limit", "quantity": "1", "limit_price": "90"}, headers=OPERATOR
    )
    again = await oms.client.post(
        "/orders", json={**body, "type": "limit", "quantity": "1", "limit_price": "90"}, headers=OPERATOR
    )
    other = await oms.client.post(
        "/orders", json={**body, "type": "limit", "quantity": "2", "limit_price": "90"}, headers=OPERATOR
    )
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again.json()["order_id"] == first.json()["order_id"]
    assert other.json()["error"]["code"] == "duplicate_client_order_id"
    assert [o.client_order_id for o in await oms.venue.open_orders(AccountId(account))] == ["dup-1"]


async def test_resting_limit_fills_later_and_cancel_releases_the_reservation(oms: Oms) -> None:
    account = await funded(oms)
    resting = (await oms.order(account, side="buy", type="limit", quantity="1", limit_price="95")).json()
    other = (await oms.order(account, side="buy", type="limit", quantity="2", limit_price="90")).json()
    assert resting["status"] == other["status"] == "accepted"
    # 1 x 95 + 0.4 % = 95.38 and 2 x 90 + 0.4 % = 180.72 reserved
    assert (await oms.balances(account))["USD"]["reserved"] == "276.1"

    await oms.market.publish_trade("94.9", "1")  # prints through the bid at 95: it fills as maker
    filled = (await oms.client.get(f"/orders/{resting['order_id']}", headers=OPERATOR)).json()
    assert filled["status"] == "filled"

    canceled = await oms.client.post(f"/orders/{other['order_id']}/cancel", headers=OPERATOR)
    assert canceled.json()["status"] == "canceled"
    balances = await oms.balances(account)
    # maker fill: 95 + 0.2375 fee (0.25 %, USD kept to 0.0001); the reservation is consumed, the cancel releases
    # the other: 10000 - 95.2375 = 9904.7625
    assert balances["USD"]["reserved"] == "0"
    assert balances["USD"]["total"] == "9904.7625"
    again = await oms.client.post(f"/orders/{other['order_id']}/cancel", headers=OPERATOR)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "order_not_cancelable"


async def test_a_limit_buy_filling_below_its_limit_releases_the_improvement_at_once(oms: Oms) -> None:
    account = await funded(oms)
    # 60 at up to 101 against the book's 50 at 100: 50 fill at 100 now (taker), 10 rest at 101
    response = await oms.order(account, side="buy", type="limit", quantity="60", limit_price="101")
    assert response.status_code == 201, response.text
    assert response.json()["status"] == "partially_filled"
    balances = await oms.balances(account)
    # spent: 50 x 100 + 0.4 % = 5,020; still reserved: what the 10 left need, 10 x 101 + 0.4 % = 1,014.04
    # (the 50 x 1 USD improvement and its fee are free again now, not when the order ends)
    assert balances["USD"]["total"] == "4980"
    assert balances["USD"]["reserved"] == "1014.04"
    assert balances["USD"]["free"] == "3965.96"


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"symbol": "DOGE/USD", "side": "buy", "type": "market", "quantity": "1"}, "unknown_instrument"),
        # The schema says quantity is a decimal above 0, so "0" is refused by request validation.
        ({"side": "buy", "type": "market", "quantity": "0"}, "validation_error"),
        ({"side": "buy", "type": "market", "quantity": "0.000000001"}, "quantity_too_precise"),
        ({"side": "buy", "type": "market", "quantity": "1", "limit_price": "100"}, "price_not_allowed"),
        ({"side": "buy", "type": "limit", "quantity": "1", "limit_price": "100.05"}, "price_too_precise"),
    ],
)
async def test_bad_orders_are_4xx_with_a_code_and_nothing_persisted(
    oms: Oms, engine: AsyncEngine, fields: dict[str, str], code: str
) -> None:
    account = await funded(oms)
    response = await oms.order(account, **fields)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]
    async with engine.connect() as connection:
        count = await connection.scalar(text("SELECT count(*) FROM oms.orders WHERE account_id = :a"), {"a": account})
    assert count == 0


async def test_json_numbers_for_money_are_refused(oms: Oms) -> None:
    account = await funded(oms)
    response = await oms.order(account, side="buy", type="limit", quantity=0.1, limit_price="90")
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


async def test_insufficient_balance_is_denied_recorded_and_audited(oms: Oms, engine: AsyncEngine) -> None:
    account = await funded(oms, usd="50")
    response = await oms.order(account, side="buy", type="limit", quantity="1", limit_price="90")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "insufficient_balance"
    denied = (await oms.client.get(f"/orders/{error['details']['order_id']}", headers=OPERATOR)).json()
    assert denied["status"] == "denied"
    async with engine.connect() as connection:
        actions = (
            await connection.scalars(
                text("SELECT action FROM audit.audit_log WHERE chain = :c ORDER BY position"), {"c": f"oms:{account}"}
            )
        ).all()
        report = await verify_chain(connection, chain=f"oms:{account}")
    assert "order.OrderDenied" in actions
    assert report.ok


async def test_halted_trading_denies_new_orders_but_cancels_pass(oms: Oms, module_database_url: str) -> None:
    account = await funded(oms)
    resting = (await oms.order(account, side="buy", type="limit", quantity="1", limit_price="90")).json()
    await applied(module_database_url, await oms.market.controls.set_state(account, TradingState.HALTED))
    denied = await oms.order(account, side="buy", type="limit", quantity="1", limit_price="90")
    assert denied.status_code == 409
    assert denied.json()["error"]["code"] == "trading_halted"
    canceled = await oms.client.post(f"/orders/{resting['order_id']}/cancel", headers=OPERATOR)
    assert canceled.json()["status"] == "canceled"


async def test_operators_only_reach_granted_accounts(oms: Oms) -> None:
    account = await funded(oms)
    stranger = token(Role.OPERATOR, accounts=("someone-else",))
    response = await oms.client.post(
        "/orders",
        json={
            "account_id": account,
            "client_order_id": "x1",
            "symbol": "BTC/USD",
            "side": "buy",
            "type": "market",
            "quantity": "1",
        },
        headers=stranger,
    )
    assert response.status_code == 403
    viewer = await oms.client.post("/orders", json={}, headers=token(Role.VIEWER))
    assert viewer.status_code == 403
    listed = await oms.client.get("/orders", headers=stranger)
    assert listed.json()["items"] == []


async def test_order_events_reach_the_outbox_and_get_published(oms: Oms, engine: AsyncEngine) -> None:
    account = await funded(oms)
    order = (await oms.order(account, side="buy", type="market", quantity="0.1")).json()

    async def published() -> list[str]:
        async with engine.connect() as connection:
            rows = await connection.execute(
                text("SELECT event_type, sent_at FROM oms.outbox WHERE key = :k ORDER BY id"), {"k": order["order_id"]}
            )
            events = rows.all()
        return [event_type for event_type, sent_at in events] if all(sent for _, sent in events) else []

    types = await eventually(published, timeout_s=15, message="order events published")
    assert types == ["OrderInitialized", "OrderSubmitted", "OrderAccepted", "OrderFilled"]
