"""Exit brackets against the real OMS on the paper venue: the README walkthrough as a test.

Books and trade prints go out on one pair of market-data topics that both the OMS's paper feed and the exit
engine read, as under `make up`. Buy at market through the OMS's REST; the OMS's own order events (read from its outbox) reach the exit
engine on a unique topic; the engine's commands are handled by the OMS's own command handler. Prices move:
the trailing stop ratchets, the take-profit rests as a real limit sell (base balance reserved), the trailing
stop fires, the take-profit is canceled at the OMS, a market sell closes the position.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.oms.adapters import oms_adapters
from services.oms.command_auth import CommandCredentials
from services.oms.consumers import handle_command
from services.risk.exits.service import bracket_id_for
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.db import UnitOfWork
from shared.events import Envelope, EventProducer
from tests.helpers import eventually, own_database
from tests.integration.test_risk_exits import Harness, exit_app, exit_app_settings
from tests.kit.auth import VERIFIER, token, worker_bearer
from tests.kit.factories import account_id, order
from tests.kit.oms import paper_oms, serving
from tests.kit.paper import PaperMarket


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "risk_exits_oms") as url:
        yield url


class Bridge:
    """OMS outbox -> the engine's order-events topic; the engine's commands topic -> the OMS's command handler."""

    def __init__(self, oms_app: Any, harness: Harness, database_url: str) -> None:
        self.orders = oms_adapters(oms_app.state.runtime).orders
        self.harness = harness
        self.engine = create_async_engine(database_url)
        self.last_outbox_id = 0
        self.commands = AIOKafkaConsumer(
            harness.settings.exits_commands_topic,
            bootstrap_servers=harness.settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.commands.start()
        try:
            while not stop.is_set():
                await self.forward_events()
                batches = await self.commands.getmany(timeout_ms=50)
                for records in batches.values():
                    for record in records:
                        await self.handle(Envelope.from_bytes(record.value))
        finally:
            await self.commands.stop()
            await self.engine.dispose()

    async def handle(self, envelope: Envelope) -> None:
        self.harness.commands.append(envelope)
        # The risk app here has no service identity: the bridge stands in for its relay's authorization header.
        credentials = CommandCredentials(VERIFIER, f"Bearer {worker_bearer('risk')}")
        async with UnitOfWork(self.orders.sessionmaker) as uow:
            await handle_command(self.orders, uow.session, envelope, credentials)

    async def forward_events(self) -> None:
        async with self.engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT id, key, payload FROM oms.outbox WHERE id > :last AND topic = 'oms.order-events.v1' ORDER BY id"
                    ),
                    {"last": self.last_outbox_id},
                )
            ).all()
        for row in rows:
            envelope = Envelope.model_validate(row.payload)
            await self.harness.producer.send(self.harness.settings.exits_order_events_topic, envelope, key=row.key)
            self.last_outbox_id = row.id


@pytest.fixture
async def stack(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[tuple[Harness, PaperMarket, httpx.AsyncClient]]:
    risk_settings = exit_app_settings(
        settings,
        database_url=SecretStr(module_database_url),
        exits_book_topic=paper_market.book_topic,
        exits_trade_topic=paper_market.trade_topic,
    )
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-exits-oms")
    await producer.start()
    risk_app = exit_app(risk_settings)
    stop = asyncio.Event()
    async with (
        paper_oms(settings, module_database_url, paper_market) as (oms_app, oms_client),
        serving(risk_app, "http://risk") as risk_client,
    ):
        harness = Harness(risk_settings, risk_client, producer)
        bridge = Bridge(oms_app, harness, module_database_url)
        task = asyncio.create_task(bridge.run(stop))
        try:
            yield harness, paper_market, oms_client
        finally:
            stop.set()
            await task
    await producer.stop()


async def test_walkthrough_buy_ratchet_trigger_close_against_the_oms(
    stack: tuple[Harness, PaperMarket, httpx.AsyncClient],
) -> None:
    harness, market, oms = stack
    operator = token(Role.OPERATOR)
    account = account_id("walk")
    deposit = await oms.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": "1000", "reference": uuid.uuid4().hex},
        headers=operator,
    )
    assert deposit.status_code == 201, deposit.text
    buy = order(account, client_order_id="buy-1")  # walks the book: 1 at the ask of 100
    bought = await oms.post("/orders", json=buy, headers=operator)
    assert bought.status_code == 201, bought.text
    assert bought.json()["status"] == "filled"
    bracket_url = f"/risk/exits/{bracket_id_for(account, bought.json()['order_id'])}"

    async def bracket(**expected: Any) -> dict[str, Any] | None:
        response = await harness.client.get(bracket_url, headers=operator)
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body if all(body.get(k) == v for k, v in expected.items()) else None

    # 1. armed from the account's defaults off the fill at 100: stop 98, target 104, trailing 1.5 from 101
    armed = await eventually(lambda: bracket(status="armed"), timeout_s=20, message="bracket armed")
    assert (armed["stop_loss"], armed["take_profit"]) == ("98", "104")
    assert {leg["kind"]: leg["state"] for leg in armed["legs"]} == {
        "stop_loss": "watching",
        "take_profit": "watching",
        "trailing": "inactive",
    }
    # 2. the price rises: the trailing stop activates and ratchets; at 103 the target is nearer: it rests
    for price in ["102", "103"]:
        await market.publish_trade(price)
    resting = await eventually(lambda: bracket(trailing_stop="101.5"), timeout_s=20, message="ratcheted")

    async def tp_at_oms() -> dict[str, Any] | None:
        orders = (await oms.get("/orders", params={"account_id": account}, headers=operator)).json()["items"]
        return next((o for o in orders if o["side"] == "sell" and o["status"] == "accepted"), None)

    tp = await eventually(tp_at_oms, timeout_s=20, message="take-profit resting at the OMS")
    assert (tp["type"], tp["limit_price"], tp["quantity"]) == ("limit", "104", "1")
    balances = {
        b["asset"]: b
        for b in (await oms.get("/balances", params={"account_id": account}, headers=operator)).json()["items"]
    }
    assert balances["BTC"]["reserved"] == "1"  # the one balance backs the one resting exit
    assert resting is not None
    # 3. the price falls back to the trailing stop: cancel the take-profit, then sell at market
    await market.publish_book(bids=[("101.4", "50")], asks=[("101.6", "50")])
    await market.publish_trade("101.5")
    closed = await eventually(lambda: bracket(status="closed"), timeout_s=30, message="bracket closed")
    assert closed["exit_leg"] == "trailing"
    assert [(o["leg"], o["status"]) for o in closed["exit_orders"]] == [
        ("take_profit", "canceled"),
        ("trailing", "filled"),
    ]
    orders = (await oms.get("/orders", params={"account_id": account}, headers=operator)).json()["items"]
    sells = sorted((o["type"], o["status"]) for o in orders if o["side"] == "sell")
    assert sells == [("limit", "canceled"), ("market", "filled")]
    positions = (await oms.get("/positions", params={"account_id": account}, headers=operator)).json()["items"]
    assert positions[0]["quantity"] == "0"


async def test_explicit_exits_on_the_order_take_profit_fills_and_closes(
    stack: tuple[Harness, PaperMarket, httpx.AsyncClient],
) -> None:
    harness, market, oms = stack
    operator = token(Role.OPERATOR)
    account = account_id("walk")
    deposit = await oms.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": "1000", "reference": uuid.uuid4().hex},
        headers=operator,
    )
    assert deposit.status_code == 201, deposit.text
    buy = order(account, client_order_id="buy-2", quantity="2", exits={"stop_loss": "95", "take_profit": "101"})
    bought = await oms.post("/orders", json=buy, headers=operator)
    assert bought.status_code == 201, bought.text
    bracket_url = f"/risk/exits/{bracket_id_for(account, bought.json()['order_id'])}"

    async def sell_resting() -> dict[str, Any] | None:
        orders = (await oms.get("/orders", params={"account_id": account}, headers=operator)).json()["items"]
        return next((o for o in orders if o["side"] == "sell" and o["status"] == "accepted"), None)

    # 100 is 1 from the order's target and 5 from its stop: the take-profit rests at once
    tp = await eventually(sell_resting, timeout_s=20, message="take-profit resting")
    assert (tp["limit_price"], tp["quantity"]) == ("101", "2")
    await market.publish_trade("101.1", "0.5", side="buy")  # prints through the 101 sell: partial, the bracket shrinks

    async def bracket(**expected: Any) -> dict[str, Any] | None:
        response = await harness.client.get(bracket_url, headers=operator)
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and all(body.get(k) == v for k, v in expected.items()) else None

    partial = await eventually(lambda: bracket(open_quantity="1.5"), timeout_s=20, message="partial exit")
    assert partial["from_policy"] is False
    await market.publish_trade("101.1", "1.5", side="buy")  # the rest: OCO, the stop is dropped
    closed = await eventually(lambda: bracket(status="closed"), timeout_s=20, message="closed by the take-profit")
    assert [(o["leg"], o["status"], o["filled_quantity"]) for o in closed["exit_orders"]] == [
        ("take_profit", "filled", "2")
    ]
    await market.publish_trade("90")  # through the old stop: nothing more is sent
    await asyncio.sleep(0.5)
    submits = [c for c in harness.commands if c.type == "SubmitOrder"]
    assert len(submits) == 1
