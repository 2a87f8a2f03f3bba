"""Exit brackets through real Kafka and PostgreSQL: entry fills and ticks in, OMS commands out; REST on top.

The app is the risk service's exit part alone (its router and WORKERS on the platform's app factory), on
unique topics, so the test neither depends on nor disturbs the rest of the risk service.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.risk.adapters import build_risk_adapters
from services.risk.config import RiskSettings
from services.risk.exits import api as exits_api
from services.risk.exits.service import bracket_id_for
from services.risk.exits.workers import WORKERS
from shared.app_factory import ServiceSpec, build_service_app
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.exits import ExitInstructions
from shared.contracts.orders import (
    CommandRejected,
    OrderAccepted,
    OrderCanceled,
    OrderEventMessage,
    OrderFilled,
    SubmitOrder,
)
from shared.contracts.registry import new_envelope
from shared.domain.types import Liquidity, OrderSide, OrderStatus
from shared.events import Envelope, EventProducer
from shared.marketdata import Trade, to_envelope
from tests.helpers import eventually
from tests.kit.auth import jwt_settings, token


def topic() -> str:
    return f"test.{uuid.uuid4().hex[:12]}.v1"


def exit_app_settings(settings: AetherSettings, **overrides: Any) -> RiskSettings:
    fields: dict[str, Any] = {
        "exits_order_events_topic": topic(),
        "exits_commands_topic": topic(),
        "exits_events_topic": topic(),
        "exits_book_topic": topic(),
        "exits_trade_topic": topic(),
        "exits_consumer_group": f"test-exits-{uuid.uuid4().hex[:8]}",
        "exits_marketdata_offset_reset": "earliest",
        "exits_order_events_offset_reset": "earliest",
        **overrides,
    }
    return RiskSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", *fields}),
        **jwt_settings(),
        log_level="WARNING",
        **fields,
    )


def exit_app(settings: RiskSettings) -> FastAPI:
    spec = ServiceSpec(
        name="risk",
        title="risk exits (test)",
        description="",
        routers=[exits_api.router],
        workers=WORKERS,
        on_startup=build_risk_adapters,
    )
    return build_service_app(spec, settings)


class Harness:
    """Publishes OMS events and trades, reads the commands the exit engine sends."""

    def __init__(self, settings: RiskSettings, client: httpx.AsyncClient, producer: EventProducer) -> None:
        self.settings = settings
        self.client = client
        self.producer = producer
        self.commands: list[Envelope] = []
        self.reader = AIOKafkaConsumer(
            settings.exits_commands_topic,
            bootstrap_servers=settings.kafka_bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    async def order_event(self, event: OrderEventMessage, *, at: datetime | None = None, key: str = "k") -> None:
        """Publish `event` as the OMS does (its envelope built from the contract model)."""
        envelope = new_envelope(event, producer="oms", aggregate_id=event.order_id, now=at)
        await self.producer.send(self.settings.exits_order_events_topic, envelope, key=key)

    async def trade(self, price: str, n: int) -> None:
        trade = Trade(
            venue="synthetic",
            symbol="BTC/USD",
            trade_id=f"t{n}",
            price=Decimal(price),
            qty=Decimal("0.01"),
            side="sell",
            timestamp=datetime(2026, 1, 1, 0, 0, n, tzinfo=UTC),
        )
        await self.producer.send(self.settings.exits_trade_topic, to_envelope(trade, "test"), key="BTC/USD")

    async def command(self, match: Callable[[Envelope], bool]) -> Envelope:
        async def probe() -> Envelope | None:
            batches = await self.reader.getmany(timeout_ms=100)
            for records in batches.values():
                self.commands.extend(Envelope.from_bytes(record.value) for record in records)
            return next((command for command in self.commands if match(command)), None)

        found: Envelope = await eventually(probe, timeout_s=20, message="exit command on the commands topic")
        return found


@pytest.fixture
async def harness(settings: AetherSettings) -> AsyncIterator[Harness]:
    risk_settings = exit_app_settings(settings)
    producer = EventProducer(settings.kafka_bootstrap, client_id="test-exits")
    await producer.start()
    app = exit_app(risk_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://risk") as client:
            h = Harness(risk_settings, client, producer)
            await h.reader.start()
            try:
                yield h
            finally:
                await h.reader.stop()
    await producer.stop()


# --- OMS order events, whole and valid (shared/contracts/orders.py), as the OMS publishes them ------------------


def _order_fields(account: str, order_id: str, client_order_id: str, side: str, status: str) -> dict[str, Any]:
    return {
        "order_id": order_id,
        "occurred_at": datetime.now(UTC),
        "version": 3,
        "account_id": account,
        "client_order_id": client_order_id,
        "symbol": "BTC/USD",
        "side": OrderSide(side),
        "status": OrderStatus(status),
    }


def filled(
    account: str,
    order_id: str,
    side: str,
    quantity: str,
    price: str,
    *,
    client_order_id: str | None = None,
    exits: dict[str, Any] | None = None,
) -> OrderFilled:
    """The last fill of an order (filled in full at once)."""
    return OrderFilled(
        **_order_fields(account, order_id, client_order_id or f"c-{order_id}", side, "filled"),
        exits=None if exits is None else ExitInstructions.model_validate(exits),
        trade_id=uuid.uuid4().hex,
        quantity=Decimal(quantity),
        price=Decimal(price),
        fee=Decimal(0),
        liquidity=Liquidity.TAKER,
        filled_quantity=Decimal(quantity),
        leaves_quantity=Decimal(0),
        is_final=True,
    )


def accepted(account: str, order_id: str, client_order_id: str) -> OrderAccepted:
    """The venue accepted an exit order (a sell)."""
    return OrderAccepted(
        **_order_fields(account, order_id, client_order_id, "sell", "accepted"),
        venue_order_id=f"v-{order_id}",
        implicit=False,
    )


def canceled(account: str, order_id: str, client_order_id: str) -> OrderCanceled:
    """An exit order (a sell) canceled at the venue."""
    return OrderCanceled(
        **_order_fields(account, order_id, client_order_id, "sell", "canceled"), reason="canceled by the exit engine"
    )


def is_type(type_: str, **payload: Any) -> Callable[[Envelope], bool]:
    def match(envelope: Envelope) -> bool:
        order = envelope.payload.get("order")
        body = order if isinstance(order, dict) else envelope.payload
        return envelope.type == type_ and all(body.get(k) == v for k, v in payload.items())

    return match


async def test_entry_fill_and_ticks_through_kafka_send_the_exit_commands(harness: Harness) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    exits = {"stop_loss": "95", "take_profit": "101"}
    await harness.order_event(filled(account, "entry-1", "buy", "1", "100", exits=exits))
    # 100 is 1 from the target and 5 from the stop: the take-profit rests as a limit sell at once
    tp = await harness.command(is_type("SubmitOrder", account_id=account, type="limit"))
    order = tp.payload["order"]
    assert isinstance(order, dict)
    assert (order["side"], order["quantity"], order["limit_price"]) == ("sell", "1", "101")
    tp_id = str(order["client_order_id"])
    assert tp_id.startswith(f"x-{bracket_id_for(account, 'entry-1')}-tp")
    await harness.order_event(accepted(account, "exit-1", tp_id))
    await harness.trade("94.5", 1)  # through the stop: cancel the resting take-profit first
    await harness.command(is_type("CancelOrder", client_order_id=tp_id))
    assert not [c for c in harness.commands if c.type == "SubmitOrder" and c.payload["order"] != order]
    await harness.order_event(canceled(account, "exit-1", tp_id))
    sell = await harness.command(is_type("SubmitOrder", account_id=account, type="market"))
    sell_order = sell.payload["order"]
    assert isinstance(sell_order, dict)
    assert sell_order["quantity"] == "1"
    sell_id = str(sell_order["client_order_id"])
    assert "-sl" in sell_id
    await harness.order_event(filled(account, "exit-2", "sell", "1", "94.4", client_order_id=sell_id))
    bracket_id = bracket_id_for(account, "entry-1")

    async def closed() -> dict[str, Any] | None:
        body = (await harness.client.get(f"/risk/exits/{bracket_id}", headers=token(Role.VIEWER))).json()
        return body if body["status"] == "closed" else None

    body = await eventually(closed, timeout_s=20, message="bracket closed")
    assert body["open_quantity"] == "0"
    assert [o["status"] for o in body["exit_orders"]] == ["canceled", "filled"]


async def test_policy_defaults_and_the_trailing_stop_ratchets_then_triggers(harness: Harness) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    # no "exits" key at all: the account's defaults (stop 98, target 104, trailing 1.5 from 101)
    await harness.order_event(filled(account, "entry-2", "buy", "2", "100"))
    bracket_id = bracket_id_for(account, "entry-2")
    viewer = token(Role.VIEWER)

    async def armed() -> dict[str, Any] | None:
        response = await harness.client.get("/risk/exits", params={"account_id": account}, headers=viewer)
        items = response.json()
        return items[0] if items else None

    first = await eventually(armed, timeout_s=20, message="bracket armed")
    assert (first["stop_loss"], first["take_profit"], first["from_policy"]) == ("98", "104", True)
    for n, price in enumerate(["102", "102.8"], start=1):
        await harness.trade(price, n)

    async def ratcheted() -> bool:
        body = (await harness.client.get(f"/risk/exits/{bracket_id}", headers=viewer)).json()
        return bool(body["trailing_stop"] == "101.3")

    await eventually(ratcheted, timeout_s=20, message="trailing stop at 102.8 - 1.5")
    # at 102.8 the target (104, 1.2 away) is nearer than the trailing stop (101.3, 1.5 away): it rests
    tp = await harness.command(is_type("SubmitOrder", account_id=account, type="limit"))
    tp_id = str(tp.payload["order"]["client_order_id"])  # type: ignore[call-overload,index]
    await harness.trade("101.3", 3)  # touches the trailing stop: free the balance, then sell at market
    await harness.command(is_type("CancelOrder", client_order_id=tp_id))
    await harness.order_event(canceled(account, "exit-tp", tp_id))
    sell = await harness.command(is_type("SubmitOrder", account_id=account, type="market"))
    sell_order = sell.payload["order"]
    assert isinstance(sell_order, dict)
    assert sell_order["quantity"] == "2"
    assert "-tr" in str(sell_order["client_order_id"])


async def test_rest_moves_stops_and_policies_with_roles_and_audit(harness: Harness, engine: AsyncEngine) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    exits = {"stop_loss": "90", "take_profit": "120"}
    await harness.order_event(filled(account, "entry-3", "buy", "1", "100", exits=exits))
    bracket_id = bracket_id_for(account, "entry-3")
    url = f"/risk/exits/{bracket_id}"
    operator = token(Role.OPERATOR, accounts=(account,))

    async def exists() -> bool:
        return (await harness.client.get(url, headers=operator)).status_code == 200

    await eventually(exists, timeout_s=20, message="bracket armed")
    up = await harness.client.patch(url, json={"stop_loss": "92.5", "reason": "lock in"}, headers=operator)
    assert up.status_code == 200, up.text
    assert up.json()["stop_loss"] == "92.5"
    down = await harness.client.patch(url, json={"stop_loss": "91"}, headers=operator)
    assert down.status_code == 422
    assert down.json()["error"]["details"]["field"] == "allow_unfavourable"
    flagged = await harness.client.patch(url, json={"stop_loss": "91", "allow_unfavourable": True}, headers=operator)
    assert flagged.status_code == 403
    risk = token(Role.RISK, accounts=(account,))
    loosened = await harness.client.patch(url, json={"stop_loss": "91", "allow_unfavourable": True}, headers=risk)
    assert loosened.status_code == 200, loosened.text
    stranger = token(Role.OPERATOR, accounts=("x",))
    missing_url = f"/risk/exits/{uuid.uuid4().hex}"
    # Another account's bracket answers like a missing one (same status and code): its existence does not leak.
    for method, body in (("PATCH", {"stop_loss": "93"}), ("GET", None)):
        foreign = await harness.client.request(method, url, json=body, headers=stranger)
        missing = await harness.client.request(method, missing_url, json=body, headers=stranger)
        assert (foreign.status_code, foreign.json()["error"]["code"]) == (404, missing.json()["error"]["code"])
        assert missing.status_code == 404
    async with engine.connect() as conn:
        actions = (
            await conn.execute(
                text("SELECT action FROM audit.audit_log WHERE target = :t ORDER BY seq"), {"t": bracket_id}
            )
        ).scalars()
        assert list(actions) == ["risk.exit.stop_moved", "risk.exit.stop_moved"]

    policy_url = f"/risk/exit-policy/{account}"
    default = (await harness.client.get(policy_url, headers=operator)).json()
    assert (default["version"], default["stop_loss_pct"]) == (0, "2")
    bad = await harness.client.put(policy_url, json={"stop_loss_pct": "-1"}, headers=risk)
    assert bad.status_code == 422
    assert "stop_loss_pct" in bad.json()["error"]["message"]
    bad = await harness.client.put(
        policy_url,
        json={"trailing_distance_pct": None, "trailing_activation_pct": None, "stop_loss_pct": None},
        headers=risk,
    )
    assert bad.status_code == 422
    assert "stop_loss_pct" in bad.json()["error"]["message"]
    assert (await harness.client.put(policy_url, json={}, headers=operator)).status_code == 403
    put = await harness.client.put(policy_url, json={"stop_loss_pct": "3", "take_profit_pct": "6"}, headers=risk)
    assert put.status_code == 200, put.text
    assert (put.json()["version"], put.json()["stop_loss_pct"]) == (1, "3")
    async with engine.connect() as conn:  # published for the OMS in the same transaction (risk.controls.v1)
        records = (
            await conn.execute(
                text("SELECT payload FROM risk.outbox WHERE event_type = 'ExitPolicySet' AND key = :k ORDER BY id"),
                {"k": f"exit_policy:account:{account}"},
            )
        ).scalars()
        # one per version (the start-up snapshot may publish the current version again)
        published = {record["payload"]["policy"]["version"]: record["payload"]["policy"] for record in records}
    assert [(p["version"], p["stop_loss_pct"], p["require_explicit_exits"]) for p in published.values()] == [
        (1, "3", False)
    ]
    # the next entry of the account takes the new defaults: 3 % under 200 = 194, 6 % over = 212
    await harness.order_event(filled(account, "entry-4", "buy", "1", "200"))
    other = f"/risk/exits/{bracket_id_for(account, 'entry-4')}"

    async def levels() -> tuple[str, str] | None:
        response = await harness.client.get(other, headers=operator)
        return (response.json()["stop_loss"], response.json()["take_profit"]) if response.status_code == 200 else None

    assert await eventually(levels, timeout_s=20, message="second bracket") == ("194", "212")


async def test_an_entry_fill_older_than_the_max_age_arms_nothing(harness: Harness) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    old = datetime.now(UTC) - timedelta(hours=2)
    await harness.order_event(filled(account, "old-1", "buy", "1", "100"), at=old)
    await harness.order_event(filled(account, "new-1", "buy", "1", "100"))
    viewer = token(Role.VIEWER)

    async def armed() -> list[str] | None:
        items = (await harness.client.get("/risk/exits", params={"account_id": account}, headers=viewer)).json()
        return [item["entry_order_id"] for item in items] or None

    # same partition, in order: once the fresh fill is armed the stale one has been handled (and skipped)
    assert await eventually(armed, timeout_s=20, message="fresh entry armed") == ["new-1"]


async def test_refused_exits_fail_the_bracket_until_an_operator_rearms_it(harness: Harness) -> None:
    account = f"acct-{uuid.uuid4().hex[:8]}"
    exits = {"stop_loss": "95"}
    await harness.order_event(filled(account, "entry-5", "buy", "1", "100", exits=exits))
    bracket_id = bracket_id_for(account, "entry-5")
    url = f"/risk/exits/{bracket_id}"
    operator = token(Role.OPERATOR, accounts=(account,))

    async def exists() -> bool:
        return (await harness.client.get(url, headers=operator)).status_code == 200

    await eventually(exists, timeout_s=20, message="bracket armed")
    await harness.trade("94", 1)
    refused: list[str] = []
    for _ in range(3):  # the OMS refuses the command (e.g. trading halted) three times
        sent = await harness.command(
            lambda c: (
                c.type == "SubmitOrder"
                and isinstance(c.payload["order"], dict)
                and c.payload["order"]["account_id"] == account
                and c.payload["order"]["client_order_id"] not in refused
            )
        )
        client_order_id = str(sent.payload["order"]["client_order_id"])  # type: ignore[call-overload,index]
        refused.append(client_order_id)
        rejection = new_envelope(
            CommandRejected(command_type=SubmitOrder.TYPE, code="trading_halted", message="halted"),
            producer="oms",
            aggregate_id=client_order_id,
        )
        await harness.producer.send(harness.settings.exits_order_events_topic, rejection, key="k")

    async def failed() -> bool:
        return bool((await harness.client.get(url, headers=operator)).json()["status"] == "failed")

    await eventually(failed, timeout_s=20, message="bracket failed after three refusals")
    assert [r.rsplit("-", 1)[-1] for r in refused] == ["sl1", "sl2", "sl3"]
    rearmed = await harness.client.patch(url, json={"rearm": True, "reason": "trading resumed"}, headers=operator)
    assert rearmed.status_code == 200, rearmed.text
    assert rearmed.json()["status"] == "exiting"  # still under the stop: the exit goes out again
    again = await harness.command(is_type("SubmitOrder", account_id=account, client_order_id=f"x-{bracket_id}-sl4"))
    assert again.payload["order"]["type"] == "market"  # type: ignore[call-overload,index]
    twice = await harness.client.patch(url, json={"rearm": True}, headers=operator)
    assert twice.status_code == 409
    nothing = await harness.client.patch(url, json={}, headers=operator)
    assert nothing.status_code == 422
