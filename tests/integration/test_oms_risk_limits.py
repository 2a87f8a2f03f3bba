"""The OMS's pre-trade chain with the risk limits the risk service publishes on its controls topic, and exit
instructions on orders.

Real PostgreSQL, Redis and Kafka; the OMS trades on the paper venue fed through Kafka (taker fee 0.4 %).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.adapters import oms_adapters
from services.oms.service import OrderService
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.controls import ControlKind, ControlOwner, control_key
from shared.contracts.risk import ExitPolicyValue
from tests.helpers import eventually, own_database
from tests.kit.auth import token
from tests.kit.controls import applied
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "oms_limits") as url:
        yield url


@pytest.fixture
async def engine(module_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(module_database_url)
    yield engine
    await engine.dispose()


OPERATOR = token(Role.OPERATOR, subject="olga")


class Oms:
    def __init__(self, client: httpx.AsyncClient, market: PaperMarket, database_url: str, orders: OrderService) -> None:
        self.client = client
        self.market = market
        self.database_url = database_url
        self.orders = orders

    async def order(self, account: str, **fields: Any) -> httpx.Response:
        body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD", **fields}
        return await self.client.post("/orders", json=body, headers=OPERATOR)

    async def limits(self, account: str, **values: Any) -> None:
        """Publish the account's limits as the risk service does; return once the OMS holds them."""
        await applied(self.database_url, await self.market.controls.set_limits(account, values))

    async def exit_policy(self, account: str, policy: ExitPolicyValue) -> None:
        values = policy.model_dump(mode="json", exclude={"version"})
        await applied(self.database_url, await self.market.controls.set_exit_policy(account, values))


@pytest.fixture
async def oms(settings: AetherSettings, module_database_url: str, paper_market: PaperMarket) -> AsyncIterator[Oms]:
    # the kit's book: bid 99.9, ask 100 (mid 99.95); market buys fill at 100
    async with paper_oms(settings, module_database_url, paper_market, resolve_after_s=2.0) as (app, client):
        yield Oms(client, paper_market, module_database_url, oms_adapters(app.state.runtime).orders)


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


async def test_limit_violations_are_denied_with_their_code_and_recorded(oms: Oms) -> None:
    account = await funded(oms)
    await oms.limits(account, max_order_notional="60", max_open_orders=1, price_collar_pct="5")
    too_big = await oms.order(account, side="buy", type="limit", quantity="1", limit_price="99")  # 99 > 60
    assert too_big.status_code == 422
    error = too_big.json()["error"]
    assert error["code"] == "max_order_notional"
    denied = (await oms.client.get(f"/orders/{error['details']['order_id']}", headers=OPERATOR)).json()
    assert (denied["status"], denied["reason"].split(":")[0]) == ("denied", "max_order_notional")
    far = await oms.order(account, side="buy", type="limit", quantity="0.5", limit_price="90")  # 10 % from mid
    assert far.json()["error"]["code"] == "price_collar"
    resting = await oms.order(account, side="buy", type="limit", quantity="0.5", limit_price="96")  # 4 %, 48
    assert resting.status_code == 201, resting.text
    second = await oms.order(account, side="buy", type="limit", quantity="0.5", limit_price="96")
    assert second.json()["error"]["code"] == "max_open_orders"
    await oms.client.post(f"/orders/{resting.json()['order_id']}/cancel", headers=OPERATOR)
    third = await oms.order(account, side="buy", type="limit", quantity="0.5", limit_price="96")
    assert third.status_code == 201, third.text


async def test_position_cap_and_allow_list(oms: Oms) -> None:
    account = await funded(oms)
    await oms.limits(
        account,
        max_position_notional="1000",
        max_position_notional_by_symbol={"BTC/USD": "150"},
        allowed_symbols=["BTC/USD"],
    )
    first = await oms.order(account, side="buy", type="market", quantity="1")  # holds 1 BTC (100 at mid)
    assert first.status_code == 201, first.text
    over = await oms.order(account, side="buy", type="market", quantity="0.6")  # 100 + 60 > 150
    assert over.json()["error"]["code"] == "max_position_notional"
    within = await oms.order(account, side="buy", type="market", quantity="0.4")  # 100 + 40
    assert within.status_code == 201, within.text
    eth = await oms.order(account, symbol="ETH/USD", side="buy", type="limit", quantity="1", limit_price="10")
    assert eth.json()["error"]["code"] == "symbol_not_allowed"


async def test_daily_realized_loss_stops_buys_but_not_reducing_sells(oms: Oms) -> None:
    account = await funded(oms)
    assert (await oms.order(account, side="buy", type="market", quantity="2")).status_code == 201
    await oms.market.publish_book(bids=[("90", "50")], asks=[("90.1", "50")])
    # sold 1 at 90 (fee 0.36), bought at 100 + 0.4 fee per unit: realized 90 - 100.4 - 0.36 = -10.76
    assert (await oms.order(account, side="sell", type="market", quantity="1")).status_code == 201
    await oms.limits(account, daily_loss_limit="10")
    buy = await oms.order(account, side="buy", type="market", quantity="0.1")
    assert buy.status_code == 422
    assert buy.json()["error"]["code"] == "daily_loss_limit"
    assert "10.76" in buy.json()["error"]["message"]
    sell = await oms.order(account, side="sell", type="market", quantity="1")
    assert sell.status_code == 201, sell.text


async def test_explicit_exits_are_required_checked_stored_and_published(oms: Oms, engine: AsyncEngine) -> None:
    account = await funded(oms)
    await oms.limits(account, require_explicit_exits=True)
    bare = await oms.order(account, side="buy", type="limit", quantity="0.1", limit_price="99")
    assert bare.json()["error"]["code"] == "exits_required"
    for exits, field in (
        ({"stop_loss": "99.5", "take_profit": "110"}, "exits.stop_loss"),
        ({"stop_loss": "90", "take_profit": "98"}, "exits.take_profit"),
    ):
        wrong = await oms.order(account, side="buy", type="limit", quantity="0.1", limit_price="99", exits=exits)
        assert wrong.status_code == 422, wrong.text
        assert wrong.json()["error"]["details"]["field"] == field
    exits = {"stop_loss": "90", "take_profit": "110", "trailing": {"distance": "2.5"}}
    placed = await oms.order(account, side="buy", type="limit", quantity="0.1", limit_price="99", exits=exits)
    assert placed.status_code == 201, placed.text
    order = placed.json()
    assert order["exits"]["stop_loss"] == "90"
    assert order["exits"]["trailing"]["distance"] == "2.5"
    async with engine.connect() as conn:
        payloads = (
            await conn.scalars(
                text("SELECT payload FROM oms.outbox WHERE key = :k ORDER BY created_at"), {"k": order["order_id"]}
            )
        ).all()
        stored = await conn.scalar(text("SELECT exits FROM oms.orders WHERE order_id = :o"), {"o": order["order_id"]})
    assert stored["take_profit"] == "110"
    assert payloads, "no order event in the outbox"
    assert all(p["payload"]["exits"]["stop_loss"] == "90" for p in payloads)
    # sells need no exits, and carry exits: null on their events
    await oms.order(account, side="sell", type="limit", quantity="0.1", limit_price="101")


async def test_an_exit_policy_requiring_explicit_exits_is_obeyed_too(oms: Oms) -> None:
    account = await funded(oms)
    policy = ExitPolicyValue(
        version=1,
        stop_loss_pct=Decimal(2),
        take_profit_pct=None,
        trailing_distance_pct=None,
        trailing_activation_pct=None,
        time_limit_s=None,
        swap_band_pct=Decimal(0),
        require_explicit_exits=True,
    )
    await oms.exit_policy(account, policy)
    bare = await oms.order(account, side="buy", type="market", quantity="0.1")
    assert bare.json()["error"]["code"] == "exits_required"
    with_exits = await oms.order(account, side="buy", type="market", quantity="0.1", exits={"stop_loss": "90"})
    assert with_exits.status_code == 201, with_exits.text
    relaxed = policy.model_copy(update={"require_explicit_exits": False})
    await oms.exit_policy(account, relaxed)
    assert (await oms.order(account, side="buy", type="market", quantity="0.1")).status_code == 201


async def test_an_unreadable_limits_record_is_503_never_no_limits(oms: Oms) -> None:
    account = await funded(oms)
    await oms.limits(account, max_order_notional="1000000")
    key = control_key(ControlKind.RISK_LIMITS, account)
    await oms.market.controls.publish_raw(ControlOwner.RISK, key, b"{not json")

    async def poisoned() -> bool:
        response = await oms.order(account, side="buy", type="market", quantity="0.1")
        return response.status_code == 503 and response.json()["error"]["code"] == "controls_unknown"

    await eventually(poisoned, timeout_s=20, message="the broken limits record makes the account's controls unknown")
    await oms.limits(account, max_order_notional="1000000")  # a valid record replaces the broken one
    assert (await oms.order(account, side="buy", type="market", quantity="0.1")).status_code == 201
