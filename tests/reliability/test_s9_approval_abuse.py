"""S9: an approval means exactly what the director saw.

1. Orders: the OMS holds an order (exits included) for a director; for every field that reaches the venue, an
   approval of the order with that field changed is applied by the OMS's own decision handler: the order must be
   denied (`approval_mismatch`), never sent. Also the other way round (pure): the approved payload stays, the order
   to send differs in one field. A control approval of the true payload must release its order.
2. Policies: every way of making an approval policy less strict, by an admin token and by a director without a
   fresh TOTP proof, is refused and stores no version; a director with the proof gets a `policy_change` request
   (quorum above 1) that only another director's approval applies. The risk service holds every kind of limit
   raise and an account leaving HALTED for a director (no policy mirror: held too); an approval of another
   payload's hash applies nothing.
3. Poisoned payloads (depth, size, entries, NaN, infinity, 2^53 + 1, control characters, long keys, lone
   surrogates, the hitl-owned subject types) are refused with a 422 and a code; nothing is stored, nothing audited.
   Rows an older version let in (by SQL / a direct append) read as an opaque marker, never a 500.

Violations: anything above accepted or stored. Record: reports/reliability/S9.json.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from pydantic import SecretStr
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import create_async_engine

from services.hitl.app import create_app as create_hitl_app
from services.hitl.config import HitlSettings
from services.hitl.ui import SESSION_COOKIE
from services.oms.adapters import oms_adapters
from services.oms.repository import OmsRepository, StoredOrder
from services.oms.service import OrderService
from services.oms.use_cases.approvals import approval_mismatch
from services.oms.use_cases.placement import approval_request
from services.reports.app import create_app as create_reports_app
from services.reports.config import ReportsSettings
from services.risk.adapters import risk_adapters
from services.risk.app import create_app as create_risk_app
from services.risk.config import RiskSettings
from services.risk.consumers import handle_decision as handle_risk_decision
from shared.audit import append as audit_append
from shared.auth.keys import public_key_pem, write_key_pair
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.approvals import (
    VENUE_FIELDS,
    ApprovalDecided,
    ApprovalDecision,
    ApprovalReason,
    OrderApprovalRequested,
    approval_payload_hash,
)
from shared.contracts.exits import ExitInstructions
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork, sessionmaker_for
from shared.domain.order_requests import OrderRequest
from shared.domain.orders import Order
from shared.domain.types import AccountId, ClientOrderId, OrderId, OrderSide, OrderType, Symbol, TimeInForce
from shared.web import UNREADABLE_JSON_CODE
from tests.helpers import eventually, own_database
from tests.integration.test_hitl_api import bearer, hitl_settings, running
from tests.integration.test_hitl_ui import session_cookie
from tests.integration.test_risk_api import (
    DIRECTOR as RISK_DIRECTOR,
)
from tests.integration.test_risk_api import LIMITS, RISK_REDIS_DB, RiskApp
from tests.integration.test_risk_api import RISK as RISK_OFFICER
from tests.integration.test_risk_api import account as risk_account
from tests.integration.test_risk_api import policy as risk_policy
from tests.kit.auth import KEY as TOKEN_KEY
from tests.kit.auth import token
from tests.kit.factories import account_id
from tests.kit.factories import order as order_body
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket
from tests.reliability.conftest import RecordWriter

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
# No TOTP proof: a proof-carrying token lives 15 minutes, shorter than the suite before this module runs.
OPERATOR = token(Role.OPERATOR, subject="op-s9")
EXITS = {"stop_loss": "80", "take_profit": "120", "trailing": None, "time_limit_s": 3600}
# One changed value per venue field: what a director did not see.
VARIANTS: dict[str, Any] = {
    "account_id": "another-account",
    "client_order_id": "another-client-id",
    "symbol": "ETH/USD",
    "side": "sell",
    "type": "stop-loss-limit",
    "quantity": "21",
    "limit_price": "96",
    "trigger_price": "94",
    "time_in_force": "ioc",
    "post_only": True,
    "exits": {**EXITS, "stop_loss": "10"},
}


@pytest.fixture(scope="module")
def s9_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "s9_approvals") as url:
        yield url


@pytest.fixture
async def hitl(settings: AetherSettings, s9_database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    settings_hitl: HitlSettings = hitl_settings(settings, s9_database_url)
    async with running(create_hitl_app(settings_hitl)) as http:
        yield http


@pytest.fixture
async def reports(settings: AetherSettings, s9_database_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    keys = write_key_pair(tmp_path)
    reports_settings = ReportsSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(s9_database_url),
        jwt_public_key=SecretStr(public_key_pem(TOKEN_KEY.public_key()).decode()),
        log_level="WARNING",
        audit_anchor_private_key_file=keys.private_path,
        audit_anchor_public_key_file=keys.public_path,
    )
    app = create_reports_app(reports_settings)
    async with running(app, "http://reports") as http:
        yield http


@pytest.fixture
async def risk(settings: AetherSettings, s9_database_url: str) -> AsyncIterator[RiskApp]:
    """The risk service on this module's database, its own Redis database, its own decisions topic."""
    redis_url = re.sub(r"/\d+$", "", settings.redis_url.get_secret_value()) + f"/{RISK_REDIS_DB}"
    risk_settings = RiskSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url", "redis_url"}),
        database_url=SecretStr(s9_database_url),
        redis_url=SecretStr(redis_url),
        jwt_public_key=SecretStr(public_key_pem(TOKEN_KEY.public_key()).decode()),
        log_level="WARNING",
        decisions_topic=f"test.s9-decisions.{uuid.uuid4().hex[:10]}.v1",
    )
    app = create_risk_app(risk_settings)
    redis = Redis.from_url(redis_url)
    async with running(app, "http://risk") as http:
        yield RiskApp(http, redis, risk_adapters(app.state.runtime).risk)
    await redis.aclose()


@pytest.fixture
async def oms(
    settings: AetherSettings, s9_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[tuple[httpx.AsyncClient, OrderService]]:
    async with paper_oms(
        settings,
        s9_database_url,
        paper_market,
        bids=[("99", "50")],
        asks=[("100", "50")],
        default_approval_threshold=Decimal("1000"),
    ) as (app, http):
        yield http, oms_adapters(app.state.runtime).orders


# --- 1. orders -----------------------------------------------------------------------------------------------


async def _held_order(http: httpx.AsyncClient, orders: OrderService) -> StoredOrder:
    account = account_id("s9")
    deposit = await http.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex},
        headers=OPERATOR,
    )
    assert deposit.status_code == 201, deposit.text
    body = order_body(account, type="limit", quantity="20", limit_price="95", exits=EXITS)  # 1,900 >= 1,000
    placed = await http.post("/orders", json=body, headers=OPERATOR)
    assert placed.status_code == 201, placed.text
    assert placed.json()["status"] == "pending_approval"
    async with UnitOfWork(orders.sessionmaker) as uow:
        stored = await OmsRepository(uow.session).load(OrderId(placed.json()["order_id"]))
    assert stored is not None
    assert stored.approval_payload is not None
    return stored


async def _approve(orders: OrderService, order_id: str, payload_hash: str) -> str:
    async with UnitOfWork(orders.sessionmaker) as uow:  # the OMS's ApprovalDecided handler, as the consumer runs it
        await orders.decide(uow.session, OrderId(order_id), ApprovalDecision.APPROVED, "ok", "hitl:s9", payload_hash)

    async def settled() -> str | None:
        status = (await orders.get(OrderId(order_id))).order.status.value
        return None if status in {"pending_approval", "submitted"} else status

    return str(await eventually(settled, timeout_s=20, message="order settled after the decision"))


async def _order_cases(oms: tuple[httpx.AsyncClient, OrderService]) -> dict[str, int]:
    http, orders = oms
    assert set(VARIANTS) == VENUE_FIELDS  # every venue field is varied
    control = await _held_order(http, orders)
    assert control.approval_payload is not None
    assert await _approve(orders, control.order.id, approval_payload_hash(control.approval_payload)) == "accepted"
    violations = 0
    for field, value in VARIANTS.items():
        held = await _held_order(http, orders)
        assert held.approval_payload is not None
        changed = {**held.approval_payload, field: value}
        status = await _approve(orders, held.order.id, approval_payload_hash(changed))
        reason = (await orders.get(held.order.id)).order.reason or ""
        if status != "denied" or not reason.startswith("approval_mismatch"):
            violations += 1
    return {"cases": len(VARIANTS) + 1, "violations": violations}


def _order(**changes: Any) -> Order:
    fields: dict[str, Any] = {
        "account_id": AccountId("acc-s9"),
        "client_order_id": ClientOrderId("c-s9"),
        "symbol": Symbol("BTC/USD"),
        "side": OrderSide.BUY,
        "type": OrderType.LIMIT,
        "quantity": Decimal(20),
        "limit_price": Decimal(95),
        "trigger_price": None,
        "time_in_force": TimeInForce.GTC,
        "post_only": False,
        "created_at": NOW,
    }
    request = OrderRequest(**{**fields, **changes})
    order, _ = Order.create(OrderId("ord-s9"), request, NOW)
    return order


def _sent_order_cases() -> dict[str, int]:
    """The approved payload (and its hash) stay; the order the OMS would send differs in one field."""
    exits = ExitInstructions.model_validate(EXITS)
    reasons = [ApprovalReason.NOTIONAL_ABOVE_THRESHOLD]
    approved = approval_request(_order(), exits, Decimal(1900), reasons, "op-s9")
    payload = approved.model_dump(mode="json")
    digest = approval_payload_hash(payload)
    honest = StoredOrder(_order(), "h", "paper", "rest", NOW, EXITS, payload)
    assert approval_mismatch(honest, digest) is None  # the control: the same order is released
    typed = {
        "account_id": AccountId("another-account"),
        "client_order_id": ClientOrderId("another-client-id"),
        "symbol": Symbol("ETH/USD"),
        "side": OrderSide.SELL,
        "type": OrderType.STOP_LOSS_LIMIT,
        "quantity": Decimal(21),
        "limit_price": Decimal(96),
        "trigger_price": Decimal(94),
        "time_in_force": TimeInForce.IOC,
        "post_only": True,
    }
    violations = 0
    for field, value in typed.items():
        if approval_mismatch(replace(honest, order=_order(**{field: value})), digest) is None:
            violations += 1
    if approval_mismatch(replace(honest, exits=VARIANTS["exits"]), digest) is None:
        violations += 1
    if approval_mismatch(replace(honest, approval_payload=None), digest) is None:
        violations += 1
    return {"cases": len(typed) + 3, "violations": violations}


def test_an_order_request_lists_every_venue_field() -> None:
    order_fields = set(OrderApprovalRequested.model_fields)
    assert order_fields >= VENUE_FIELDS
    assert set(order_body("a")) | {"limit_price", "trigger_price", "time_in_force", "post_only", "exits"} <= (
        VENUE_FIELDS
    )


# --- 2. policies ---------------------------------------------------------------------------------------------

STRICT = {
    "notional_threshold": "1000",
    "new_instrument": True,
    "hedge_override": True,
    "resume_from_halted": True,
    "limit_raise": True,
    "model_confidence_min": "0.8",
    "quorum": 2,
    "directors": ["d1", "d2", "d3"],
    "expiry_s": 600,
}
WEAKENINGS: dict[str, dict[str, Any]] = {
    "threshold raised": {"notional_threshold": "5000"},
    "threshold removed": {"notional_threshold": None},
    "new_instrument off": {"new_instrument": False},
    "hedge_override off": {"hedge_override": False},
    "resume_from_halted off": {"resume_from_halted": False},
    "limit_raise off": {"limit_raise": False},
    "confidence lowered": {"model_confidence_min": "0.5"},
    "confidence removed": {"model_confidence_min": None},
    "quorum down": {"quorum": 1},
    "fewer directors": {"directors": ["d1", "d2"]},
    "every director": {"directors": []},
    "longer expiry": {"expiry_s": 7200},
}


async def _policy_version(hitl: httpx.AsyncClient, account: str) -> int:
    read = await hitl.get(f"/hitl/policies/{account}", headers=bearer("d1", [Role.DIRECTOR]))
    return int(read.json()["version"])


async def _policy_cases(hitl: httpx.AsyncClient) -> dict[str, int]:
    account = f"s9-pol-{uuid.uuid4().hex[:8]}"
    first = await hitl.put(f"/hitl/policies/{account}", json=STRICT, headers=bearer("d1", [Role.DIRECTOR]))
    assert first.status_code == 200, first.text  # from the defaults (quorum 1): the director's own proof suffices
    violations = cases = 0
    for change in WEAKENINGS.values():
        for headers, code in (
            (bearer("a1", [Role.ADMIN]), "policy_weakening_needs_director"),
            (bearer("d1", [Role.DIRECTOR], otp=False), "fresh_otp_required"),
        ):
            cases += 1
            refused = await hitl.put(f"/hitl/policies/{account}", json={**STRICT, **change}, headers=headers)
            if refused.status_code != 403 or refused.json()["error"]["code"] != code:
                violations += 1
        cases += 1  # a fresh director's weakening waits for a second director (quorum 2)
        pending = await hitl.put(
            f"/hitl/policies/{account}", json={**STRICT, **change}, headers=bearer("d1", [Role.DIRECTOR])
        )
        if pending.status_code != 202 or pending.json()["subject_type"] != "policy_change":
            violations += 1
    if await _policy_version(hitl, account) != 1:
        violations += 1  # nothing above stored a version
    # A second director applies one of them; the proposer cannot vote on their own change.
    change = await hitl.put(
        f"/hitl/policies/{account}", json={**STRICT, "limit_raise": False}, headers=bearer("d1", [Role.DIRECTOR])
    )
    request = change.json()
    path = f"/hitl/requests/{request['request_id']}/approve"
    body = {"payload_hash": request["payload_hash"]}
    cases += 2
    if (await hitl.post(path, json=body, headers=bearer("d1", [Role.DIRECTOR]))).status_code != 403:
        violations += 1
    approved = await hitl.post(path, json=body, headers=bearer("d2", [Role.DIRECTOR]))
    assert approved.status_code == 200, approved.text
    read = await hitl.get(f"/hitl/policies/{account}", headers=bearer("d1", [Role.DIRECTOR]))
    if read.json()["version"] != 2 or read.json()["rules"]["limit_raise"] is not False:
        violations += 1
    return {"cases": cases, "violations": violations}


# --- 2b. risk changes the policy holds back (limit raise, leaving HALTED) -------------------------------------

RAISES: dict[str, dict[str, Any]] = {
    "max_order_notional": {"max_order_notional": "1000000000"},
    "max_order_notional removed": {"max_order_notional": None},
    "max_position_notional": {"max_position_notional": "6000"},
    "max_position_notional_by_symbol": {"max_position_notional_by_symbol": {"BTC/USD": "9000"}},
    "max_open_orders": {"max_open_orders": 50},
    "daily_loss_limit": {"daily_loss_limit": "1000"},
    "price_collar_pct": {"price_collar_pct": "50"},
    "allowed_symbols": {"allowed_symbols": None},
    "require_explicit_exits": {"require_explicit_exits": False},
}


async def _risk_cases(risk: RiskApp) -> dict[str, int]:
    """Every kind of raise, with no policy mirror (fail closed) and with `limit_raise`, is held: the limits in
    force stay; an approval of another payload's hash applies nothing; leaving HALTED is held the same way."""
    violations = cases = 0
    for mirror in ("absent", "limit_raise"):
        acct = risk_account()
        base = {**LIMITS, "reason": "s9 limits"}
        assert (await risk.client.put(f"/risk/limits/{acct}", json=base, headers=RISK_OFFICER)).status_code == 200
        if mirror == "limit_raise":
            await risk_policy(risk.redis, acct, limit_raise=True, resume_from_halted=True)
        for change in RAISES.values():
            cases += 1
            held = await risk.client.put(f"/risk/limits/{acct}", json={**base, **change}, headers=RISK_OFFICER)
            read = (await risk.client.get(f"/risk/limits/{acct}", headers=RISK_OFFICER)).json()
            if held.status_code != 202 or read["version"] != 1:
                violations += 1
                continue
            subject = held.json()["subject_id"]
            envelope = new_envelope(
                ApprovalDecided(
                    request_id=str(uuid.uuid4()), subject_type="limit_raise", subject_id=subject, account_id=acct,
                    decision=ApprovalDecision.APPROVED, reason=None, payload_hash="e" * 64,
                    decided_at=datetime.now(UTC), approvers=["d2"],
                ),
                producer="hitl", aggregate_id=subject,
            )  # fmt: skip
            async with UnitOfWork(risk.service.sessionmaker) as uow:
                await handle_risk_decision(risk.service, uow.session, envelope)
            cases += 1
            if (await risk.client.get(f"/risk/limits/{acct}", headers=RISK_OFFICER)).json()["version"] != 1:
                violations += 1
        scope = {"scope": "account", "account_id": acct, "reason": "s9"}
        await risk.client.post("/risk/kill-switch", json=scope, headers=RISK_OFFICER)
        for path in ("/risk/resume", "/risk/safe-mode"):
            cases += 1
            held = await risk.client.post(path, json=scope, headers=RISK_DIRECTOR)
            if held.status_code != 202 or (await risk.service.state("account", acct)).state.value != "halted":
                violations += 1
    return {"cases": cases, "violations": violations}


# --- 3. poisoned payloads ------------------------------------------------------------------------------------


def _nested(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth - 1):
        value = {"a": value}
    return {"a": value}


POISONS: dict[str, bytes] = {
    "300 deep": json.dumps(_nested(300)).encode(),
    "7 deep": json.dumps(_nested(7)).encode(),
    "1 MB text": json.dumps({"x": "a" * 1_000_000}).encode(),
    "100k entries": json.dumps({"x": list(range(100_000))}).encode(),
    "NaN": b'{"x": NaN}',
    "Infinity": b'{"x": Infinity}',
    "2^53 + 1": b'{"x": 9007199254740993}',
    "control character": json.dumps({"x": "a\u0001b"}).encode(),
    "long key": json.dumps({"k" * 300: 1}).encode(),
    "lone surrogate": b'{"x": "\\ud800"}',
}


async def _stored(hitl_db: str, account: str) -> tuple[int, int]:
    engine = create_async_engine(hitl_db)
    try:
        async with engine.connect() as connection:
            requests = await connection.scalar(
                sa.text("SELECT count(*) FROM hitl.requests WHERE account_id = :a"), {"a": account}
            )
            audited = await connection.scalar(
                sa.text("SELECT count(*) FROM audit.audit_log WHERE chain = :c"), {"c": f"hitl:{account}"}
            )
    finally:
        await engine.dispose()
    return int(requests or 0), int(audited or 0)


async def _poison_cases(hitl: httpx.AsyncClient, hitl_db: str) -> dict[str, int]:
    account = f"s9-poison-{uuid.uuid4().hex[:8]}"
    violations = 0
    bodies = [
        b'{"subject_type": "manual_trade", "subject_id": "s-%d", "account_id": "%s", "payload": %s}'
        % (index, account.encode(), payload)
        for index, payload in enumerate(POISONS.values())
    ]
    bodies += [
        json.dumps({"subject_type": subject, "subject_id": "s-x", "account_id": account, "payload": {}}).encode()
        for subject in ("order", "hedge_override", "policy_change")
    ]
    for body in bodies:
        headers = {**OPERATOR, "content-type": "application/json"}
        response = await hitl.post("/hitl/requests", content=body, headers=headers)
        if response.status_code != 422 or not response.json()["error"]["code"]:
            violations += 1
    if await _stored(hitl_db, account) != (0, 0):
        violations += 1
    return {"cases": len(bodies), "violations": violations}


async def _legacy_rows(hitl_db: str) -> tuple[str, str]:
    """A request row and an audit entry as an older version stored them: 300 levels deep."""
    account = f"s9-legacy-{uuid.uuid4().hex[:8]}"
    deep = _nested(300)
    engine = create_async_engine(hitl_db)
    try:
        async with engine.begin() as connection:
            await connection.execute(
                sa.text(
                    "INSERT INTO hitl.requests (request_id, subject_type, subject_id, account_id, requested_by,"
                    " source, payload_json, payload_hash, quorum, eligible, status, created_at, expires_at)"
                    " VALUES (:id, 'manual_trade', :id, :account, 'op-old', 'rest', :payload, :hash, 1,"
                    " '[]'::jsonb, 'pending', now(), now() + interval '1 hour')"
                ),
                {"id": f"legacy-{uuid.uuid4().hex[:8]}", "account": account, "payload": json.dumps(deep),
                 "hash": "0" * 64},
            )  # fmt: skip
        async with UnitOfWork(sessionmaker_for(engine)) as uow:
            await audit_append(
                uow.session, actor="op-old", action="hitl.request_opened", target="legacy",
                details={"payload": deep}, chain=f"hitl:{account}",
            )  # fmt: skip
    finally:
        await engine.dispose()
    return account, f"hitl:{account}"


async def _reader_cases(hitl: httpx.AsyncClient, reports: httpx.AsyncClient, hitl_db: str) -> dict[str, int]:
    account, chain = await _legacy_rows(hitl_db)
    violations = 0
    listed = await hitl.get("/hitl/requests", params={"account_id": account}, headers=bearer("d1", [Role.DIRECTOR]))
    if listed.status_code != 200 or listed.json()["items"][0]["payload"].get("code") != UNREADABLE_JSON_CODE:
        violations += 1
    everyone = await hitl.get("/hitl/requests", headers=bearer("d1", [Role.DIRECTOR]))
    if everyone.status_code != 200:
        violations += 1
    hitl.cookies.set(SESSION_COOKIE, session_cookie("d1", [Role.DIRECTOR]), path="/")
    page = await hitl.get("/hitl/ui")
    hitl.cookies.clear()
    if page.status_code != 200 or "unreadable payload" not in page.text:
        violations += 1
    audit = await reports.get("/audit", params={"chain": chain}, headers=bearer("aud", [Role.AUDITOR]))
    if audit.status_code != 200 or audit.json()["items"][0]["details"].get("code") != UNREADABLE_JSON_CODE:
        violations += 1
    return {"cases": 4, "violations": violations}


async def test_s9_approval_abuse(
    hitl: httpx.AsyncClient,
    reports: httpx.AsyncClient,
    oms: tuple[httpx.AsyncClient, OrderService],
    risk: RiskApp,
    s9_database_url: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    figures = {
        "orders_approved_with_a_changed_field": await _order_cases(oms),
        "orders_sent_differing_from_the_approval": _sent_order_cases(),
        "policy_weakenings_without_second_factor_or_quorum": await _policy_cases(hitl),
        "risk_raises_and_resumes_without_a_director": await _risk_cases(risk),
        "poisoned_payloads_refused_before_storage": await _poison_cases(hitl, s9_database_url),
        "readers_of_legacy_rows_not_failing": await _reader_cases(hitl, reports, s9_database_url),
    }
    record = {
        "id": "S9",
        "seed": reliability_seed,
        "cases": sum(f["cases"] for f in figures.values()),
        "violations": sum(f["violations"] for f in figures.values()),
        **figures,
    }
    write_reliability_record(record)
    assert record["violations"] == 0, record
