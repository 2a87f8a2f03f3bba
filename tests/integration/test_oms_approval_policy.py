"""The OMS decides which orders wait for a director by the account's hitl policy (published on the approval
service's controls topic, kept in the OMS's own copy), and by its own account threshold when there is none.

Real PostgreSQL, Redis and Kafka; the OMS trades on the paper venue, whose book (bid 100, ask 101) comes
through Kafka: a limit buy at 100 rests, a market buy fills at 101.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from services.oms.adapters import oms_adapters
from services.oms.service import OrderService
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.approvals import approval_payload_hash
from shared.contracts.controls import ControlKind, ControlOwner, control_key
from shared.contracts.orders import OrderCreate
from shared.db import UnitOfWork
from shared.domain.types import OrderId
from tests.helpers import eventually, own_database
from tests.kit.auth import token
from tests.kit.controls import applied
from tests.kit.factories import account_id
from tests.kit.factories import order as order_body
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket, open_paper_market

OPERATOR = token(Role.OPERATOR, subject="op")
BIDS, ASKS = [("100", "500")], [("101", "500")]


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "oms_approval_policy") as url:
        yield url


class Oms:
    def __init__(self, client: httpx.AsyncClient, market: PaperMarket, database_url: str, orders: OrderService) -> None:
        self.client = client
        self.market = market
        self.database_url = database_url
        self.orders = orders

    async def funded(self) -> str:
        account = account_id("pol")
        response = await self.client.post(
            f"/accounts/{account}/paper/deposits",
            json={"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex},
            headers=OPERATOR,
        )
        assert response.status_code == 201, response.text
        return account

    async def policy(self, account: str, **rules: Any) -> None:
        """The account's next policy version as the approval service publishes it; returns once the OMS holds it."""
        await applied(self.database_url, await self.market.controls.set_approval_policy(account, rules))

    async def order(self, account: str, quantity: str, **fields: Any) -> httpx.Response:
        body = order_body(account, quantity=quantity, **{"type": "limit", "limit_price": "100", **fields})
        return await self.client.post("/orders", json=body, headers=OPERATOR)

    async def approval_request(self, order_id: str) -> dict[str, Any]:
        """The `ApprovalRequested` payload the OMS wrote to its outbox for `order_id`."""
        async with UnitOfWork(self.orders.sessionmaker) as uow:
            row = await uow.session.execute(
                sa.text("SELECT payload FROM oms.outbox WHERE event_type = 'ApprovalRequested' AND key = :key"),
                {"key": order_id},
            )
            envelopes = [dict(r[0]) for r in row.all()]
        assert len(envelopes) == 1
        return dict(envelopes[0]["payload"])

    async def status(self, order_id: str) -> str:
        return str((await self.client.get(f"/orders/{order_id}", headers=OPERATOR)).json()["status"])


@pytest.fixture(scope="module")  # one app: a restart would reconcile again
async def oms(
    settings: AetherSettings, redis_url: str, kafka_bootstrap: str, module_database_url: str
) -> AsyncIterator[Oms]:
    async with (
        open_paper_market(redis_url, kafka_bootstrap) as market,
        paper_oms(
            settings,
            module_database_url,
            market,
            bids=BIDS,
            asks=ASKS,
            default_approval_threshold=Decimal("1000"),
            resolve_after_s=0.1,
        ) as (app, http),
    ):
        yield Oms(http, market, module_database_url, oms_adapters(app.state.runtime).orders)


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def test_policy_threshold_decides_with_its_reason(oms: Oms) -> None:
    account = await oms.funded()
    await oms.policy(account, notional_threshold="1000", new_instrument=False)
    big = await oms.order(account, "15")  # 15 x 100 = 1,500 >= 1,000
    assert big.status_code == 201, big.text
    assert big.json()["status"] == "pending_approval"
    request = await oms.approval_request(big.json()["order_id"])
    assert request["reason"] == "notional_above_threshold"
    assert request["reasons"] == ["notional_above_threshold"]
    assert request["notional"] == "1500"
    small = await oms.order(account, "5")  # 500
    assert small.status_code == 201, small.text
    assert small.json()["status"] == "accepted"


async def test_policy_replaces_the_account_threshold(oms: Oms) -> None:
    account = await oms.funded()  # the OMS account threshold is 1,000
    await oms.policy(account, notional_threshold="5000", new_instrument=False)
    assert (await oms.order(account, "15")).json()["status"] == "accepted"  # 1,500: under the policy's 5,000
    await oms.policy(account, notional_threshold=None, new_instrument=False)
    assert (await oms.order(account, "40")).json()["status"] == "accepted"  # null threshold: never by notional


async def test_first_order_in_a_symbol_waits_and_the_next_one_after_approval_does_not(oms: Oms) -> None:
    account = await oms.funded()
    await oms.policy(account, notional_threshold="10000")
    first = await oms.order(account, "1", type="market", limit_price=None)
    assert first.json()["status"] == "pending_approval"
    first_id = first.json()["order_id"]
    assert (await oms.approval_request(first_id))["reasons"] == ["new_instrument"]
    while_pending = await oms.order(account, "1")  # the first one has not been to the venue yet: still new
    assert while_pending.json()["status"] == "pending_approval"
    both = await oms.order(account, "150")  # 15,000: both reasons, the first one is "reason"
    assert both.status_code == 201, both.text
    payload = await oms.approval_request(both.json()["order_id"])
    assert (payload["reason"], payload["reasons"]) == (
        "notional_above_threshold",
        ["notional_above_threshold", "new_instrument"],
    )
    async with UnitOfWork(oms.orders.sessionmaker) as uow:  # the OMS's ApprovalDecided handler, as the consumer runs it
        approved = approval_payload_hash(await oms.approval_request(first_id))
        assert await oms.orders.decide(uow.session, OrderId(first_id), "approved", "ok", "hitl:test", approved)
    await eventually(lambda: _filled(oms, first_id), timeout_s=10, message="approved order filled")
    second = await oms.order(account, "1")
    assert second.json()["status"] == "accepted"


async def test_without_a_policy_the_account_threshold_still_applies(oms: Oms) -> None:
    account = await oms.funded()
    big = await oms.order(account, "15")
    assert big.json()["status"] == "pending_approval"
    assert (await oms.approval_request(big.json()["order_id"]))["reason"] == "notional_above_threshold"
    assert (await oms.order(account, "5")).json()["status"] == "accepted"  # no new_instrument rule without a policy


async def test_an_unreadable_policy_record_is_503_and_nothing_is_recorded(oms: Oms) -> None:
    account = await oms.funded()
    key = control_key(ControlKind.APPROVAL_POLICY, account)
    await oms.market.controls.publish_raw(ControlOwner.HITL, key, b"{not json")

    async def refused() -> bool:
        response = await oms.order(account, "1")
        return response.status_code == 503 and response.json()["error"]["code"] == "controls_unknown"

    await eventually(refused, timeout_s=20, message="the broken policy record makes the account's controls unknown")
    listed = await oms.client.get("/orders", params={"account_id": account}, headers=OPERATOR)
    assert listed.status_code == 200
    assert listed.json()["items"] == []
    await oms.policy(account, notional_threshold="1000")  # a valid version replaces the broken record
    assert (await oms.order(account, "1")).status_code == 201


async def _filled(oms: Oms, order_id: str) -> bool:
    return await oms.status(order_id) == "filled"


async def test_a_model_driven_command_below_the_policys_confidence_waits_for_a_director(oms: Oms) -> None:
    """`SubmitOrder.model_confidence` (the signal follower's orders, ml/signals/strategy.py) against the policy's
    `model_confidence_min`, on the path the commands consumer takes (`OrderService.record`, origin "command")."""
    account = await oms.funded()
    await oms.policy(account, notional_threshold=None, new_instrument=False, model_confidence_min="0.7")

    async def command(confidence: str) -> tuple[str, str]:
        body = OrderCreate.model_validate(order_body(account, quantity="1", type="limit", limit_price="100"))
        async with UnitOfWork(oms.orders.sessionmaker) as uow:
            placed = await oms.orders.record(
                uow.session, body, "service:ml-signals", "command", model_confidence=Decimal(confidence)
            )
        order = placed.stored.order
        return order.id, order.status.value

    unsure_id, unsure_status = await command("0.55")
    assert unsure_status == "pending_approval"
    assert (await oms.approval_request(unsure_id))["reasons"] == ["low_model_confidence"]
    _, confident_status = await command("0.9")
    assert confident_status == "submitted"  # recorded for the venue: nothing held it
