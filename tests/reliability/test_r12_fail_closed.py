"""R12: the kill switch fails closed, on every path to the venue.

The real risk service (its app, REST and controls-snapshot worker) moves trading states and limits; they reach
the real OMS app through the compacted controls topic and the OMS's own copy, as under `make up`. The OMS trades
on its paper venue fed through Kafka. Paths checked, each against the state it must obey:

- approval path: an order waiting for a director, then the account HALTED (or REDUCING, or its order limit
  lowered), then approved -> denied with `trading_halted` / `trading_reducing` / `max_order_notional`, and the
  denial audited;
- resubmit path: an order committed SUBMITTED but never sent (a crash between commit and send), then the
  account HALTED, then released by the resolver as at start-up -> canceled with `trading_halted`, never sent;
- REST and `oms.commands.v1`, with the risk service stopped and Redis flushed (it keeps no data), on a HALTED
  account -> denied `trading_halted` (a limit buy, a market buy, and a `SubmitOrder` command).

Figures: orders reaching the venue against the state (must be 0) and wrong decisions (must be 0). Uses a Redis
database of its own (13) because it flushes it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from services.oms.adapters import oms_adapters
from services.oms.schemas import OrderCreate
from services.oms.service import OrderService
from services.oms.use_cases.reconciliation import ResolveOutcome
from services.risk.app import create_app as create_risk_app
from services.risk.config import RiskSettings
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.approvals import ApprovalDecided, ApprovalDecision, approval_payload_hash
from shared.contracts.orders import SubmitOrder
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from shared.domain.types import OrderId
from shared.events import Envelope, EventProducer
from shared.events.producer import OutgoingMessage
from shared.events.topics import HITL_DECISIONS, OMS_COMMANDS
from tests.helpers import eventually, own_database
from tests.kit.auth import jwt_settings, token, worker_authorization
from tests.kit.oms import paper_oms, serving
from tests.kit.paper import PaperMarket, open_paper_market
from tests.reliability.conftest import RecordWriter

pytestmark = pytest.mark.slow

REDIS_DB = 13
THRESHOLD = Decimal("5000")  # orders of 5,000 USD or more wait for a director
RISK = token(Role.RISK, subject="r12-risk")
OPERATOR = token(Role.OPERATOR, subject="r12-operator")


@pytest.fixture(scope="module")
def r12_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, f"r12_{uuid.uuid4().hex[:8]}") as url:
        yield url


def _own_redis(redis_url: str) -> str:
    return re.sub(r"/\d+$", "", redis_url) + f"/{REDIS_DB}"


def risk_settings(settings: AetherSettings, database_url: str, redis_url: str, market: PaperMarket) -> RiskSettings:
    """The risk service on the run's database and Redis, publishing on the run's controls topic."""
    fields: dict[str, Any] = {
        **jwt_settings(),
        "database_url": SecretStr(database_url),
        "redis_url": SecretStr(redis_url),
        "log_level": "WARNING",
        "exits_enabled": False,
        "risk_controls_topic": market.controls.risk_topic,
    }
    return RiskSettings(**settings.model_dump(exclude={"service_name", "jwt_private_key", *fields}), **fields)


@asynccontextmanager
async def risk_app(settings: RiskSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(create_risk_app(settings), "http://risk") as client:
        yield client


class Drill:
    """The OMS and risk apps of the run, and what the checks read."""

    def __init__(self, oms: httpx.AsyncClient, orders: OrderService, engine: AsyncEngine, kafka: str) -> None:
        self.oms = oms
        self.orders = orders
        self.engine = engine
        self.kafka = kafka
        self.risk: httpx.AsyncClient | None = None
        self.wrong: list[dict[str, str]] = []
        self.cases = 0

    async def funded(self, usd: str = "100000") -> str:
        account = f"r12-{uuid.uuid4().hex[:10]}"
        deposit = await self.oms.post(
            f"/accounts/{account}/paper/deposits",
            json={"asset": "USD", "amount": usd, "reference": f"r12-{account}"},
            headers=OPERATOR,
        )
        assert deposit.status_code == 201, deposit.text
        return account

    async def order(self, account: str, **fields: Any) -> httpx.Response:
        body = {"account_id": account, "client_order_id": uuid.uuid4().hex, "symbol": "BTC/USD", **fields}
        return await self.oms.post("/orders", json=body, headers=OPERATOR)

    async def held_for_approval(self, account: str) -> str:
        """A limit buy of 60 at 95 (5,700 USD): it waits for a director."""
        response = await self.order(account, side="buy", type="limit", quantity="60", limit_price="95")
        assert response.status_code == 201, response.text
        assert response.json()["status"] == "pending_approval"
        return str(response.json()["order_id"])

    async def risk_call(self, path: str, body: dict[str, Any], method: str = "POST") -> None:
        assert self.risk is not None
        response = await self.risk.request(method, path, json=body, headers=RISK)
        assert response.status_code == 200, response.text

    async def set_state(self, account: str, endpoint: str, state: str) -> None:
        """Kill switch or safe mode through the risk service's REST API; returns once the OMS copy holds it."""
        await self.risk_call(f"/risk/{endpoint}", {"scope": "account", "account_id": account, "reason": "r12 drill"})
        key = f"trading_state:account:{account}"
        await eventually(
            lambda: self._copy_says(key, "state", state), timeout_s=30, message=f"{key} {state} in the OMS"
        )

    async def set_order_limit(self, account: str, limit: str) -> None:
        await self.risk_call(
            f"/risk/limits/{account}", {"max_order_notional": limit, "reason": "r12 drill"}, method="PUT"
        )
        key = f"risk_limits:account:{account}"
        await eventually(
            lambda: self._copy_says(key, "limits", limit), timeout_s=30, message=f"{key} {limit} in the OMS"
        )

    async def _copy_says(self, key: str, field: str, expected: str) -> bool:
        async with self.engine.connect() as connection:
            value = await connection.scalar(
                sa.text("SELECT value FROM oms.controls WHERE control_key = :k"), {"k": key}
            )
        if value is None:
            return False
        found = value[field]
        return (found.get("max_order_notional") if isinstance(found, dict) else found) == expected

    async def approve(self, order_id: str) -> None:
        """`ApprovalDecided` (approved) for exactly the payload the OMS asked about, as hitl publishes it."""
        async with self.engine.connect() as connection:
            payload = await connection.scalar(
                sa.text("SELECT approval_payload FROM oms.orders WHERE order_id = :o"), {"o": order_id}
            )
        decided = ApprovalDecided(
            request_id=str(uuid.uuid4()),
            subject_type="order",
            subject_id=order_id,
            account_id="r12",
            decision=ApprovalDecision.APPROVED,
            reason="looks fine",
            payload_hash=approval_payload_hash(dict(payload)),
            decided_at=datetime.now(UTC),
            approvers=["r12-director"],
        )
        await self._send(HITL_DECISIONS, new_envelope(decided, producer="hitl", aggregate_id=order_id), order_id)

    async def command(self, body: OrderCreate) -> None:
        """`SubmitOrder` as the hedge worker's relay publishes it: with its service identity's token."""
        envelope = new_envelope(SubmitOrder(order=body), producer="hedge", aggregate_id=body.account_id)
        await self._send(OMS_COMMANDS, envelope, body.account_id, (worker_authorization("hedge"),))

    async def _send(
        self, topic: str, envelope: Envelope, key: str, extra_headers: tuple[tuple[str, bytes], ...] = ()
    ) -> None:
        producer = EventProducer(self.kafka, client_id="r12")
        await producer.start()
        try:
            headers = (*envelope.kafka_headers(), *extra_headers)
            await producer.send_raw(OutgoingMessage(topic, key, envelope.to_bytes(), headers))
        finally:
            await producer.stop()

    async def row(self, order_id: str) -> dict[str, Any]:
        async with self.engine.connect() as connection:
            row = (
                await connection.execute(
                    sa.text("SELECT status, reason FROM oms.orders WHERE order_id = :o"), {"o": order_id}
                )
            ).one()
        return {"status": row.status, "reason": row.reason or ""}

    async def expect(self, what: str, order_id: str, status: str, code: str) -> None:
        """The order ends in `status` with a reason starting with `code`, and its last transition is audited."""
        self.cases += 1
        await eventually(
            lambda: self._status_is(order_id, status), timeout_s=30, message=f"{what}: {order_id} {status}"
        )
        row = await self.row(order_id)
        if not row["reason"].startswith(f"{code}:"):
            self.wrong.append({"path": what, "expected": code, "actual": row["reason"][:120]})
        event = "OrderDenied" if status == "denied" else "OrderCanceled"
        async with self.engine.connect() as connection:
            audited = await connection.scalar(
                sa.text("SELECT count(*) FROM audit.audit_log WHERE target = :o AND action = :a"),
                {"o": order_id, "a": f"order.{event}"},
            )
        if audited != 1:
            self.wrong.append({"path": what, "expected": f"one order.{event} audit entry", "actual": str(audited)})

    async def _status_is(self, order_id: str, status: str) -> bool:
        return bool((await self.row(order_id))["status"] == status)

    def expect_response(self, what: str, response: httpx.Response, status: int, code: str) -> None:
        self.cases += 1
        actual = response.json().get("error", {}).get("code") if response.status_code >= 400 else "accepted"
        if response.status_code != status or actual != code:
            self.wrong.append(
                {"path": what, "expected": f"{status} {code}", "actual": f"{response.status_code} {actual}"}
            )

    async def venue_orders(self, accounts: list[str]) -> int:
        """Orders of these accounts the paper venue ever received."""
        async with self.engine.connect() as connection:
            return int(
                await connection.scalar(
                    sa.text("SELECT count(*) FROM paper.orders WHERE account_id = ANY(:a)"), {"a": accounts}
                )
                or 0
            )


async def approval_paths(drill: Drill, accounts: list[str]) -> None:
    halted = await drill.funded()
    reducing = await drill.funded()
    limited = await drill.funded()
    accounts += [halted, reducing, limited]
    await drill.set_order_limit(limited, "100000")
    waiting = {account: await drill.held_for_approval(account) for account in (halted, reducing, limited)}
    await drill.set_state(halted, "kill-switch", "halted")
    await drill.set_state(reducing, "safe-mode", "reducing")
    await drill.set_order_limit(limited, "1000")
    for order_id in waiting.values():
        await drill.approve(order_id)
    await drill.expect("approval after HALTED", waiting[halted], "denied", "trading_halted")
    await drill.expect("approval after REDUCING", waiting[reducing], "denied", "trading_reducing")
    await drill.expect("approval after a lowered limit", waiting[limited], "denied", "max_order_notional")


async def resubmit_path(drill: Drill, accounts: list[str]) -> None:
    account = await drill.funded()
    accounts.append(account)
    body = OrderCreate.model_validate(
        {
            "account_id": account,
            "client_order_id": "r12-resubmit",
            "symbol": "BTC/USD",
            "side": "buy",
            "type": "limit",
            "quantity": "1",
            "limit_price": "95",
        }
    )
    async with UnitOfWork(drill.orders.sessionmaker) as uow:  # committed SUBMITTED; the process "dies" before send
        placed = await drill.orders.record(uow.session, body, "r12", origin="rest")
    order_id = placed.stored.order.id
    assert placed.stored.order.status.value == "submitted"
    await drill.set_state(account, "kill-switch", "halted")
    outcome = await drill.orders.resolve(OrderId(order_id), at_startup=True)  # what start-up reconciliation runs
    if outcome is not ResolveOutcome.DENIED_AT_RELEASE:
        drill.wrong.append({"path": "resubmit", "expected": "denied_at_release", "actual": outcome.value})
    await drill.expect("resubmit after HALTED", order_id, "canceled", "trading_halted")


async def risk_down_paths(drill: Drill, accounts: list[str], redis: Redis) -> None:
    account = accounts[0]  # halted in approval_paths; the risk service is stopped by now
    await redis.flushdb()
    limit = await drill.order(account, side="buy", type="limit", quantity="1", limit_price="95")
    drill.expect_response("REST limit buy, risk down, Redis flushed", limit, 409, "trading_halted")
    market = await drill.order(account, side="buy", type="market", quantity="1")
    drill.expect_response("REST market buy, risk down, Redis flushed", market, 409, "trading_halted")
    body = OrderCreate.model_validate(
        {
            "account_id": account,
            "client_order_id": "r12-command",
            "symbol": "BTC/USD",
            "side": "buy",
            "type": "limit",
            "quantity": "1",
            "limit_price": "95",
        }
    )
    await drill.command(body)
    drill.cases += 1

    async def recorded() -> bool:
        async with drill.engine.connect() as connection:
            row = (
                await connection.execute(
                    sa.text("SELECT status, reason FROM oms.orders WHERE account_id = :a AND client_order_id = :c"),
                    {"a": account, "c": "r12-command"},
                )
            ).first()
        return row is not None and row.status == "denied" and row.reason.startswith("trading_halted:")

    await eventually(recorded, timeout_s=30, message="SubmitOrder on a HALTED account denied trading_halted")


async def test_r12_kill_switch_fails_closed(
    settings: AetherSettings,
    r12_database_url: str,
    redis_url: str,
    kafka_bootstrap: str,
    write_reliability_record: RecordWriter,
) -> None:
    own_redis = _own_redis(redis_url)
    redis = Redis.from_url(own_redis)
    engine = create_async_engine(r12_database_url)
    accounts: list[str] = []
    try:
        async with AsyncExitStack() as stack:
            market = await stack.enter_async_context(open_paper_market(own_redis, kafka_bootstrap))
            app, oms = await stack.enter_async_context(
                paper_oms(
                    settings,
                    r12_database_url,
                    market,
                    redis_url=SecretStr(own_redis),
                    default_approval_threshold=THRESHOLD,
                    resolve_after_s=120.0,  # the drill releases the never-sent order itself
                )
            )
            drill = Drill(oms, oms_adapters(app.state.runtime).orders, engine, kafka_bootstrap)
            async with risk_app(risk_settings(settings, r12_database_url, own_redis, market)) as risk:
                drill.risk = risk
                await approval_paths(drill, accounts)
                await resubmit_path(drill, accounts)
            drill.risk = None  # the risk service is stopped from here on
            await risk_down_paths(drill, accounts, redis)
            reached = await drill.venue_orders(accounts)
    finally:
        await redis.flushdb()
        await redis.aclose()
        await engine.dispose()
    result = {
        "id": "R12-fail-closed",
        "seed": 0,
        "cases": drill.cases,
        "violations": reached + len(drill.wrong),
        "orders_reaching_venue_against_state": reached,
        "wrong_decisions": len(drill.wrong),
        "first_wrong": drill.wrong[:5],
    }
    write_reliability_record(result)
    assert result["violations"] == 0, drill.wrong
    assert drill.cases == 7  # 3 approval paths, 1 resubmit, 2 REST, 1 command
