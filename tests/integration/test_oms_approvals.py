"""Orders above the account's approval threshold wait for a director: the OMS side of the contract,
with the decision arriving as a real message on `hitl.decisions.v1`; the OMS trades on the paper venue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer

from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.approvals import ApprovalDecided, ApprovalDecision, approval_payload_hash
from shared.contracts.registry import new_envelope
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.events.topics import HITL_DECISIONS, OMS_ORDER_EVENTS
from tests.helpers import eventually, own_database
from tests.kit.auth import token
from tests.kit.factories import account_id, order
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket

HEADERS = token(Role.OPERATOR, subject="op")


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_approvals") as url:
        yield url


@pytest.fixture
async def client(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> AsyncIterator[httpx.AsyncClient]:
    async with paper_oms(
        settings,
        module_database_url,
        paper_market,
        bids=[("99", "50")],
        asks=[("100", "50")],
        default_approval_threshold=Decimal("1000"),
    ) as (_, http):
        yield http


async def requested_payload(kafka_bootstrap: str, order_id: str) -> dict[str, Any]:
    """The `ApprovalRequested` payload the OMS published for `order_id` (what hitl hashes and directors see)."""
    consumer = AIOKafkaConsumer(
        OMS_ORDER_EVENTS, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=uuid.uuid4().hex
    )
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:

        async def published() -> bool:
            batch = await consumer.getmany(timeout_ms=1_000)
            for records in batch.values():
                for record in records:
                    envelope = Envelope.from_bytes(record.value)
                    if envelope.type == "ApprovalRequested" and envelope.aggregate_id == order_id:
                        found.append(dict(envelope.payload))
            return bool(found)

        await eventually(published, timeout_s=30, message="ApprovalRequested published")
    finally:
        await consumer.stop()
    return found[0]


async def decide(kafka_bootstrap: str, order_id: str, decision: str, payload_hash: str) -> None:
    """An `ApprovalDecided` for the order on hitl.decisions.v1, as the approval service publishes it."""
    producer = EventProducer(bootstrap=kafka_bootstrap, client_id="test-hitl")
    await producer.start()
    try:
        decided = ApprovalDecided(
            request_id=str(uuid.uuid4()),
            subject_type="order",
            subject_id=order_id,
            account_id="appr-decided",  # the OMS goes by the order id
            decision=ApprovalDecision(decision),
            reason="checked",
            payload_hash=payload_hash,
            decided_at=datetime.now(UTC),
            approvers=["director"],
        )
        envelope = new_envelope(decided, producer="hitl", aggregate_id=order_id)
        await producer.send(HITL_DECISIONS, envelope)
    finally:
        await producer.stop()


async def _place(client: httpx.AsyncClient, quantity: str) -> dict[str, str]:
    account = account_id("appr")
    deposit = await client.post(
        f"/accounts/{account}/paper/deposits",
        json={"asset": "USD", "amount": "100000", "reference": uuid.uuid4().hex},
        headers=HEADERS,
    )
    assert deposit.status_code == 201
    body = order(account, client_order_id="big-1", type="limit", quantity=quantity, limit_price="95")
    response = await client.post("/orders", json=body, headers=HEADERS)
    assert response.status_code == 201, response.text
    return dict(response.json())


async def _status(client: httpx.AsyncClient, order_id: str, expected: str) -> bool:
    return (await client.get(f"/orders/{order_id}", headers=HEADERS)).json()["status"] == expected


async def test_large_order_waits_for_approval_and_goes_on_when_approved(
    client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    order = await _place(client, "20")  # 20 x 95 = 1,900 >= 1,000
    assert order["status"] == "pending_approval"
    balances = (await client.get("/balances", params={"account_id": order["account_id"]}, headers=HEADERS)).json()
    assert balances["items"][0]["reserved"] != "0"  # funds are held while the request waits
    payload = await requested_payload(kafka_bootstrap, order["order_id"])
    assert (payload["time_in_force"], payload["post_only"], payload["trigger_price"]) == ("gtc", False, None)
    await decide(kafka_bootstrap, order["order_id"], "approved", approval_payload_hash(payload))
    await eventually(
        lambda: _status(client, order["order_id"], "accepted"), timeout_s=30, message="approved order sent"
    )


async def test_an_approval_of_another_payload_denies_the_order(client: httpx.AsyncClient, kafka_bootstrap: str) -> None:
    order = await _place(client, "20")
    payload = await requested_payload(kafka_bootstrap, order["order_id"])
    other = approval_payload_hash({**payload, "post_only": True})  # approved: the same order, but post-only
    await decide(kafka_bootstrap, order["order_id"], "approved", other)
    await eventually(lambda: _status(client, order["order_id"], "denied"), timeout_s=30, message="order denied")
    read = (await client.get(f"/orders/{order['order_id']}", headers=HEADERS)).json()
    assert read["reason"].startswith("approval_mismatch"), read


async def test_rejected_approval_denies_the_order_and_releases_funds(
    client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    order = await _place(client, "20")
    await decide(kafka_bootstrap, order["order_id"], "rejected", "0" * 64)
    await eventually(lambda: _status(client, order["order_id"], "denied"), timeout_s=30, message="order denied")
    balances = (await client.get("/balances", params={"account_id": order["account_id"]}, headers=HEADERS)).json()
    assert balances["items"][0]["reserved"] == "0"


async def test_small_order_needs_no_approval_and_the_request_is_published(
    client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    small = await _place(client, "1")
    assert small["status"] == "accepted"
    big = await _place(client, "20")
    consumer = AIOKafkaConsumer(
        OMS_ORDER_EVENTS, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest", group_id=uuid.uuid4().hex
    )
    await consumer.start()
    try:

        async def requested() -> bool:
            batch = await consumer.getmany(timeout_ms=1_000)
            return any(
                (e := Envelope.from_bytes(r.value)).type == "ApprovalRequested" and e.aggregate_id == big["order_id"]
                for records in batch.values()
                for r in records
            )

        await eventually(requested, timeout_s=30, message="ApprovalRequested published")
    finally:
        await consumer.stop()
