"""Orders above the account's approval threshold wait for a director: the OMS side of the contract,
with the decision arriving as a real message on `hitl.decisions.v1`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from pydantic import SecretStr
from redis.asyncio import Redis

from services.oms.app import create_app
from services.oms.config import OmsSettings
from shared.auth.keys import generate_private_key, private_key_pem, public_key_pem
from shared.auth.roles import Role
from shared.auth.tokens import TokenIssuer
from shared.config import AetherSettings
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.events.topics import HITL_DECISIONS, OMS_ORDER_EVENTS
from tests.fake_venue import FakeVenue
from tests.helpers import eventually, own_database

KEY = generate_private_key()
HEADERS = {
    "Authorization": "Bearer "
    + TokenIssuer(private_key_pem(KEY), "aether", "aether-platform").issue("op", [Role.OPERATOR], accounts=["*"])
}


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "oms_approvals") as url:
        yield url


@pytest.fixture
async def client(
    settings: AetherSettings, redis_url: str, module_database_url: str
) -> AsyncIterator[httpx.AsyncClient]:
    oms_settings = OmsSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(module_database_url),
        jwt_public_key=SecretStr(public_key_pem(KEY.public_key()).decode()),
        log_level="WARNING",
        default_approval_threshold=Decimal("1000"),
        resolve_after_s=0.2,
        resolver_interval_s=0.1,
    )
    redis = Redis.from_url(redis_url)
    book = {"bids": [{"price": "99", "qty": "50"}], "asks": [{"price": "100", "qty": "50"}]}
    await redis.set("marketdata:book:BTC/USD", json.dumps(book))
    await redis.aclose()
    app = create_app(oms_settings, venue=FakeVenue(price=Decimal("100")))
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://oms") as http:
        await eventually(lambda: _ready(http), timeout_s=20, message="oms ready")
        yield http


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await http.get("/readyz")).status_code == 200


async def _decide(kafka_bootstrap: str, order_id: str, decision: str) -> None:
    producer = EventProducer(bootstrap=kafka_bootstrap, client_id="test-hitl")
    await producer.start()
    try:
        envelope = Envelope.new(
            type="ApprovalDecided",
            producer="hitl",
            aggregate_id=order_id,
            payload={"subject_type": "order", "subject_id": order_id, "decision": decision, "reason": "checked"},
        )
        await producer.send(HITL_DECISIONS, envelope)
    finally:
        await producer.stop()


async def _place(client: httpx.AsyncClient, quantity: str) -> dict[str, str]:
    account = f"appr-{uuid.uuid4().hex[:8]}"
    deposit = await client.post(
        f"/accounts/{account}/paper/deposits", json={"asset": "USD", "amount": "100000"}, headers=HEADERS
    )
    assert deposit.status_code == 201
    body = {
        "account_id": account,
        "client_order_id": "big-1",
        "symbol": "BTC/USD",
        "side": "buy",
        "type": "limit",
        "quantity": quantity,
        "limit_price": "95",
    }
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
    assert balances[0]["reserved"] != "0"  # funds are held while the request waits
    await _decide(kafka_bootstrap, order["order_id"], "approved")
    await eventually(
        lambda: _status(client, order["order_id"], "accepted"), timeout_s=30, message="approved order sent"
    )


async def test_rejected_approval_denies_the_order_and_releases_funds(
    client: httpx.AsyncClient, kafka_bootstrap: str
) -> None:
    order = await _place(client, "20")
    await _decide(kafka_bootstrap, order["order_id"], "rejected")
    await eventually(lambda: _status(client, order["order_id"], "denied"), timeout_s=30, message="order denied")
    balances = (await client.get("/balances", params={"account_id": order["account_id"]}, headers=HEADERS)).json()
    assert balances[0]["reserved"] == "0"


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
