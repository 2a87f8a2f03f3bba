"""R11: an approval yields exactly one order.

The real OMS on the paper venue (books published on Kafka, as `make up` runs it) holds an order above its
approval threshold in PENDING_APPROVAL and publishes `ApprovalRequested` on oms.order-events.v1; three hitl
replicas on one database consume it (one request), take votes and publish `ApprovalDecided` through their outbox;
the OMS's own decision handler (`services.oms.consumers.handle_decision`, on a topic of this test) sends or stops
the order.

Scenarios: 200 concurrent approvals of one request spread over the replicas (50 directors x 4 clicks), double
approve, approve after expiry, self-approval. Figures: decisions per request, ApprovalDecided events per
request, orders at the venue per request (counted in the paper venue's own order table, and checked against its
query-by-client-id and open-orders answers), forbidden approvals accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import AsyncEngine

from services.hitl.app import create_app as create_hitl_app
from services.hitl.config import HitlSettings
from services.oms.adapters import oms_adapters
from services.oms.consumers import handle_decision
from services.oms.service import OrderService
from shared.app_factory import ServiceRuntime
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.db import create_engine
from shared.domain.types import AccountId, ClientOrderId
from shared.events import ConsumerLoop
from shared.events.topics import OMS_ORDER_EVENTS
from shared.venues.base import VenueAdapter
from shared.venues.paper_store import orders as paper_orders
from tests.helpers import eventually, own_database
from tests.integration.test_hitl_api import hitl_settings, read_decisions
from tests.kit.auth import token
from tests.kit.factories import order
from tests.kit.oms import paper_oms, serving
from tests.kit.paper import PaperMarket
from tests.reliability.conftest import RecordWriter

REPLICAS = 3
CONCURRENT_APPROVALS = 200
DIRECTORS = 50
THRESHOLD = Decimal(1000)
# The buy limit (95) rests below the best ask (100): an approved order stays open at the venue.
BIDS, ASKS = (("99", "50"),), (("100", "50"),)
APPROVED = ("r11-concurrent", "r11-double")
FORBIDDEN = ("r11-self", "r11-expired")


@pytest.fixture(scope="module")
def r11_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "r11") as url:
        yield url


def headers(subject: str, *roles: Role) -> dict[str, str]:
    """A token with a TOTP proof made just now (approvals demand one)."""
    return token(*roles, subject=subject, otp=True)


async def start_group_at_end(bootstrap: str, group: str, topic: str) -> None:
    """Commit the group's offsets at the end of `topic`, so a fresh test group skips other runs' history."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    partitions = [p["partition"] for t in described if t["error_code"] == 0 for p in t["partitions"]]
    if not partitions:
        return  # the topic is new: earliest is its beginning
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.commit(dict(await consumer.end_offsets(tps)))
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Stack:
    """The OMS, the hitl replicas, the paper venue the OMS trades on and that venue's database."""

    oms: httpx.AsyncClient
    replicas: list[httpx.AsyncClient]
    venue: VenueAdapter
    engine: AsyncEngine


@contextlib.asynccontextmanager
async def decision_handler(runtime: ServiceRuntime, topic: str) -> AsyncIterator[None]:
    """The OMS's real handler of hitl decisions, consuming this test's decisions topic through the OMS inbox."""
    orders: OrderService = oms_adapters(runtime).orders
    loop = ConsumerLoop(
        bootstrap=runtime.settings.kafka_bootstrap,
        group_id=f"oms.approvals.test.{uuid.uuid4().hex[:8]}",
        topics=[topic],
        sessionmaker=runtime.sessionmaker,
        tables=runtime.tables,
        handler=lambda session, envelope: handle_decision(orders, session, envelope),
        consumer_name="oms.approvals.test",
        dead_letter_producer=runtime.producer,
    )
    stop = asyncio.Event()
    await loop.start()
    task = asyncio.create_task(loop.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)
        await loop.stop()


@contextlib.asynccontextmanager
async def approval_stack(
    settings: AetherSettings, database_url: str, market: PaperMarket, kafka_bootstrap: str, engine: AsyncEngine
) -> AsyncIterator[tuple[Stack, HitlSettings]]:
    """Start the OMS on the paper venue, REPLICAS hitl apps and the OMS decision handler; yield their clients."""
    hitl = hitl_settings(settings, database_url, order_events_topic=OMS_ORDER_EVENTS)
    await start_group_at_end(kafka_bootstrap, hitl.requests_consumer_group, OMS_ORDER_EVENTS)
    async with contextlib.AsyncExitStack() as stack:
        oms_app, oms = await stack.enter_async_context(
            paper_oms(settings, database_url, market, bids=BIDS, asks=ASKS, default_approval_threshold=THRESHOLD)
        )
        replicas = [
            await stack.enter_async_context(serving(create_hitl_app(hitl), f"http://hitl-{i}")) for i in range(REPLICAS)
        ]
        runtime: ServiceRuntime = oms_app.state.runtime
        await stack.enter_async_context(decision_handler(runtime, hitl.decisions_topic))
        yield Stack(oms, replicas, oms_adapters(runtime).venue, engine), hitl


async def place_big_order(stack: Stack, account: str, requester: str, roles: list[Role]) -> dict[str, Any]:
    """An order above the threshold: the OMS holds it and asks for approval; returns the order and its request."""
    auth = headers(requester, *roles)
    deposit = await stack.oms.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex},
        headers=auth,
    )
    assert deposit.status_code == 201, deposit.text
    body = order(account, client_order_id=f"big-{account}", type="limit", quantity="20", limit_price="95")
    placed = await stack.oms.post("/orders", json=body, headers=auth)
    assert placed.status_code == 201, placed.text
    held = placed.json()
    assert held["status"] == "pending_approval", held

    async def requested() -> dict[str, Any] | None:
        page = await stack.replicas[0].get(
            "/hitl/requests", params={"account_id": account}, headers=headers("reader", Role.AUDITOR)
        )
        items = [item for item in page.json()["items"] if item["subject_id"] == held["order_id"]]
        return items[0] if items else None

    request = await eventually(requested, timeout_s=30, message="approval request opened from ApprovalRequested")
    return {"order": held, "request": request}


async def order_status(stack: Stack, order_id: str) -> str:
    answer = await stack.oms.get(f"/orders/{order_id}", headers=headers("reader", Role.AUDITOR))
    return str(answer.json()["status"])


async def approve(
    client: httpx.AsyncClient, request: dict[str, Any], director: str, auth: dict[str, str] | None = None
) -> int:
    """One approve click by `director` (`auth`: the director's headers, when made beforehand)."""
    answer = await client.post(
        f"/hitl/requests/{request['request_id']}/approve",
        json={"payload_hash": request["payload_hash"], "reason": "r11"},
        headers=auth or headers(director, Role.DIRECTOR),
    )
    return answer.status_code


async def count_rows(engine: AsyncEngine, table: str, request_id: str) -> int:
    query = sa.text(f"SELECT count(*) FROM hitl.{table} WHERE request_id = :id")  # noqa: S608 - fixed names
    async with engine.connect() as conn:
        return int((await conn.execute(query, {"id": request_id})).scalar_one())


async def venue_orders(engine: AsyncEngine, account: str) -> int:
    """Orders of `account` that reached the paper venue: rows of its own order table (schema `paper`)."""
    query = sa.select(sa.func.count()).select_from(paper_orders).where(paper_orders.c.account_id == account)
    async with engine.connect() as conn:
        return int((await conn.execute(query)).scalar_one())


async def test_r11_an_approval_yields_exactly_one_order(
    settings: AetherSettings,
    r11_database_url: str,
    paper_market: PaperMarket,
    kafka_bootstrap: str,
    reliability_seed: int,
    write_reliability_record: RecordWriter,
) -> None:
    engine = create_engine(settings.model_copy(update={"database_url": SecretStr(r11_database_url)}))
    violations: Counter[str] = Counter()
    figures: dict[str, Any] = {}
    try:
        async with approval_stack(settings, r11_database_url, paper_market, kafka_bootstrap, engine) as (stack, hitl):
            concurrent = await _concurrent_approvals(stack, violations, figures)
            double = await _double_approve(stack, violations, figures)
            selfish = await _self_approval(stack, violations, figures)
            expired = await _approve_after_expiry(stack, violations, figures)
            subjects = {concurrent, double, selfish, expired}
            decided = await read_decisions(kafka_bootstrap, hitl.decisions_topic, subjects)
            per_subject = Counter(str(e.payload["subject_id"]) for e in decided)
            figures["decided_events_per_request"] = sorted(per_subject.values())
            violations["requests_without_exactly_one_event"] += sum(1 for s in subjects if per_subject[s] != 1)
            await _orders_at_the_venue(stack, violations, figures)
    finally:
        await engine.dispose()
    record = {
        "id": "R11-approvals",
        "seed": reliability_seed,
        "cases": CONCURRENT_APPROVALS + figures["double_clicks"] + figures["self_attempts"] + figures["late_attempts"],
        "violations": sum(violations.values()),
        "replicas": REPLICAS,
        **figures,
        "violation_kinds": {kind: count for kind, count in violations.items() if count},
    }
    write_reliability_record(record)
    assert record["violations"] == 0, record["violation_kinds"]


async def _orders_at_the_venue(stack: Stack, violations: Counter[str], figures: dict[str, Any]) -> None:
    """One order per approved request and none per forbidden one, by the paper venue's own state."""
    figures["venue_orders_per_approved_request"] = {
        account: await venue_orders(stack.engine, account) for account in APPROVED
    }
    for account, count in figures["venue_orders_per_approved_request"].items():
        violations[f"{account}_orders_not_1"] += count != 1
        # The venue's API agrees with its table: found by client id, and resting (95 is below the ask).
        found = await stack.venue.query(AccountId(account), ClientOrderId(f"big-{account}"))
        violations[f"{account}_not_found_by_client_id"] += found is None
        violations[f"{account}_open_orders_not_1"] += len(await stack.venue.open_orders(AccountId(account))) != 1
    for account in FORBIDDEN:
        violations[f"{account}_orders_not_0"] += await venue_orders(stack.engine, account)
        found = await stack.venue.query(AccountId(account), ClientOrderId(f"big-{account}"))
        violations[f"{account}_found_by_client_id"] += found is not None


async def _concurrent_approvals(stack: Stack, violations: Counter[str], figures: dict[str, Any]) -> str:
    """200 approvals of one request at once, from 50 directors (4 clicks each), spread over the replicas."""
    placed = await place_big_order(stack, "r11-concurrent", "op-r11", [Role.OPERATOR])
    request = placed["request"]
    # Tokens are signed before the burst, so that the burst is only the approvals.
    directors = [(f"dir-{d}", headers(f"dir-{d}", Role.DIRECTOR)) for d in range(DIRECTORS)]
    statuses = await asyncio.gather(
        *(
            approve(stack.replicas[i % REPLICAS], request, *directors[i % DIRECTORS])
            for i in range(CONCURRENT_APPROVALS)
        )
    )
    counts = Counter(statuses)
    figures["concurrent_approvals"] = CONCURRENT_APPROVALS
    figures["concurrent_statuses"] = {str(code): n for code, n in sorted(counts.items())}
    figures["concurrent_accepted"] = counts[200]
    violations["concurrent_accepted_not_1"] += counts[200] != 1
    violations["concurrent_not_200_or_409"] += sum(n for code, n in counts.items() if code not in (200, 409))
    decisions = await count_rows(stack.engine, "decisions", request["request_id"])
    votes = await count_rows(stack.engine, "votes", request["request_id"])
    figures["decisions_per_request"] = decisions
    figures["votes_stored"] = votes
    violations["decisions_not_1"] += decisions != 1
    violations["votes_not_1"] += votes != 1
    order_id = placed["order"]["order_id"]
    await eventually(
        lambda: _status_is(stack, order_id, "accepted"), timeout_s=30, message="approved order sent to the venue"
    )
    return str(order_id)


async def _status_is(stack: Stack, order_id: str, expected: str) -> bool:
    return await order_status(stack, order_id) == expected


async def _double_approve(stack: Stack, violations: Counter[str], figures: dict[str, Any]) -> str:
    """The same director clicks approve twice (and a second director once more) after the decision."""
    placed = await place_big_order(stack, "r11-double", "op-r11", [Role.OPERATOR])
    request = placed["request"]
    first = await approve(stack.replicas[0], request, "dir-double")
    again = [
        await approve(stack.replicas[1], request, "dir-double"),
        await approve(stack.replicas[2], request, "dir-other"),
    ]
    figures["double_clicks"] = 1 + len(again)
    violations["first_approval_not_200"] += first != 200
    violations["double_approvals_accepted"] += sum(1 for code in again if code == 200)
    await eventually(lambda: _status_is(stack, placed["order"]["order_id"], "accepted"), timeout_s=30)
    return str(placed["order"]["order_id"])


async def _self_approval(stack: Stack, violations: Counter[str], figures: dict[str, Any]) -> str:
    """An operator who is also a director places the order and tries to approve it himself, on every replica."""
    placed = await place_big_order(stack, "r11-self", "dir-op", [Role.OPERATOR, Role.DIRECTOR])
    codes = [await approve(replica, placed["request"], "dir-op") for replica in stack.replicas]
    figures["self_attempts"] = len(codes)
    figures["self_approvals_accepted"] = sum(1 for code in codes if code == 200)
    violations["self_approvals_accepted"] += figures["self_approvals_accepted"]
    violations["self_approval_not_403"] += sum(1 for code in codes if code != 403)
    # Someone else rejects it so that the request has its one decision.
    reject = await stack.replicas[0].post(
        f"/hitl/requests/{placed['request']['request_id']}/reject",
        json={"payload_hash": placed["request"]["payload_hash"], "reason": "self-approval attempt"},
        headers=headers("dir-judge", Role.DIRECTOR),
    )
    violations["reject_not_200"] += reject.status_code != 200
    await eventually(lambda: _status_is(stack, placed["order"]["order_id"], "denied"), timeout_s=30)
    return str(placed["order"]["order_id"])


async def _approve_after_expiry(stack: Stack, violations: Counter[str], figures: dict[str, Any]) -> str:
    """A request that expires (policy expiry 1 s): the worker decides `expired`, approvals afterwards are refused."""
    policy = await stack.replicas[0].put(
        "/hitl/policies/r11-expired", json={"expiry_s": 1}, headers=headers("admin", Role.ADMIN)
    )
    assert policy.status_code == 200, policy.text
    placed = await place_big_order(stack, "r11-expired", "op-r11", [Role.OPERATOR])
    order_id = placed["order"]["order_id"]
    await eventually(lambda: _status_is(stack, order_id, "expired"), timeout_s=30, message="order expired")
    codes = [await approve(replica, placed["request"], f"dir-late-{i}") for i, replica in enumerate(stack.replicas)]
    figures["late_attempts"] = len(codes)
    figures["late_approvals_accepted"] = sum(1 for code in codes if code == 200)
    violations["late_approvals_accepted"] += figures["late_approvals_accepted"]
    late_decisions = await count_rows(stack.engine, "decisions", placed["request"]["request_id"])
    violations["late_decisions_not_1"] += late_decisions != 1
    violations["expired_order_moved_on"] += await order_status(stack, order_id) != "expired"
    return str(order_id)
