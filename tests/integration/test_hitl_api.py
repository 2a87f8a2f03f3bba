"""The approval service over REST against the real stack: policies, requests from REST and from
`ApprovalRequested` events, hash binding, quorum, self-approval, fresh TOTP, rejection reasons, expiry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from fastapi import FastAPI
from pydantic import SecretStr

from services.hitl.app import create_app
from services.hitl.config import HitlSettings
from services.hitl.policy import payload_hash
from shared.auth.roles import Role, default_scopes
from shared.config import AetherSettings
from shared.events import Envelope
from shared.events.producer import EventProducer
from tests.helpers import eventually, own_database
from tests.kit.auth import ISSUER, jwt_settings, token


def bearer(subject: str, roles: list[Role], *, otp: bool = True, accounts: tuple[str, ...] = ("*",)) -> dict[str, str]:
    """Headers with a token for `subject`; `otp` marks a TOTP proof made just now."""
    return token(*roles, subject=subject, accounts=accounts, otp=otp)


def hitl_settings(base: AetherSettings, database_url: str, **overrides: Any) -> HitlSettings:
    """Settings for a test hitl app: its own topics (so that tests never see each other's messages)."""
    fields = base.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"})
    values: dict[str, Any] = {
        "database_url": SecretStr(database_url),
        **jwt_settings(),
        "log_level": "WARNING",
        "decisions_topic": f"test.hitl-decisions.{uuid.uuid4().hex[:10]}.v1",
        "order_events_topic": f"test.order-events.{uuid.uuid4().hex[:10]}.v1",
        "risk_events_topic": f"test.risk-events.{uuid.uuid4().hex[:10]}.v1",
        "requests_consumer_group": f"hitl.test.{uuid.uuid4().hex[:10]}",
        "expiry_interval_s": 0.1,
        **overrides,
    }
    return HitlSettings(**fields, **values)


@asynccontextmanager
async def running(app: FastAPI, base_url: str = "http://hitl") -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan (relay, consumer, expiry worker) and an in-process client."""
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url=base_url) as http:
        yield http


@pytest.fixture(scope="module")
def hitl_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hitl_api") as url:
        yield url


@pytest.fixture
async def settings_hitl(settings: AetherSettings, hitl_database_url: str) -> HitlSettings:
    return hitl_settings(settings, hitl_database_url)


@pytest.fixture
async def client(settings_hitl: HitlSettings) -> AsyncIterator[httpx.AsyncClient]:
    async with running(create_app(settings_hitl)) as http:
        yield http


def order_payload(account: str, order_id: str, requester: str = "op-1") -> dict[str, Any]:
    return {
        "subject_type": "order",
        "subject_id": order_id,
        "account_id": account,
        "requested_by": requester,
        "client_order_id": f"c-{order_id}",
        "symbol": "BTC/USD",
        "side": "buy",
        "type": "limit",
        "quantity": "20",
        "limit_price": "95",
        "trigger_price": None,
        "time_in_force": "gtc",
        "post_only": False,
        "exits": None,
        "notional": "1900",
        "reason": "notional_above_threshold",
        "reasons": ["notional_above_threshold"],
    }


async def open_request(
    client: httpx.AsyncClient, account: str, requester: str = "op-1", payload: dict[str, Any] | None = None
) -> dict[str, Any]:
    subject = f"ord-{uuid.uuid4().hex[:10]}"
    body = {
        "subject_type": "manual_trade",
        "subject_id": subject,
        "account_id": account,
        "payload": payload or order_payload(account, subject, requester),
    }
    response = await client.post("/hitl/requests", json=body, headers=bearer(requester, [Role.OPERATOR]))
    assert response.status_code == 201, response.text
    return dict(response.json())


def new_account() -> str:
    return f"acct-{uuid.uuid4().hex[:8]}"


async def test_policy_is_versioned_and_needs_director_or_admin(client: httpx.AsyncClient) -> None:
    account = new_account()
    default = await client.get(f"/hitl/policies/{account}", headers=bearer("d1", [Role.DIRECTOR]))
    assert default.status_code == 200
    assert default.json()["version"] == 0
    rules = {"notional_threshold": "5000", "quorum": 2, "directors": ["d1", "d2", "d3"], "expiry_s": 600}
    first = await client.put(f"/hitl/policies/{account}", json=rules, headers=bearer("d1", [Role.DIRECTOR]))
    assert first.status_code == 200, first.text
    second = await client.put(
        f"/hitl/policies/{account}", json={**rules, "quorum": 3}, headers=bearer("a1", [Role.ADMIN])
    )
    assert (first.json()["version"], second.json()["version"]) == (1, 2)
    assert second.json()["rules"]["quorum"] == 3
    assert second.json()["created_by"] == "a1"
    operator = await client.put(f"/hitl/policies/{account}", json=rules, headers=bearer("o", [Role.OPERATOR]))
    assert operator.status_code == 403
    unreachable = await client.put(
        f"/hitl/policies/{account}", json={**rules, "quorum": 4}, headers=bearer("d1", [Role.DIRECTOR])
    )
    assert unreachable.status_code == 422
    assert "quorum" in unreachable.text
    extra = await client.put(f"/hitl/policies/{account}", json={"bogus": 1}, headers=bearer("d1", [Role.DIRECTOR]))
    assert extra.status_code == 422
    assert "bogus" in extra.text
    reasons = await client.post(
        f"/hitl/policies/{account}/evaluate",
        json={"kind": "order", "notional": "6000", "instrument_known": False},
        headers=bearer("o", [Role.OPERATOR]),
    )
    assert reasons.json() == ["notional_above_threshold", "new_instrument"]


async def test_request_binds_the_payload_hash_and_a_changed_hash_is_refused(client: httpx.AsyncClient) -> None:
    account = new_account()
    request = await open_request(client, account)
    assert request["payload_hash"] == payload_hash(request["payload"])
    assert request["status"] == "pending"
    changed = payload_hash({**request["payload"], "quantity": "200"})
    wrong = await client.post(
        f"/hitl/requests/{request['request_id']}/approve",
        json={"payload_hash": changed},
        headers=bearer("d1", [Role.DIRECTOR]),
    )
    assert wrong.status_code == 409
    assert wrong.json()["error"]["code"] == "payload_hash_mismatch"
    again = await client.post(
        "/hitl/requests",
        json={
            "subject_type": "manual_trade",
            "subject_id": request["subject_id"],
            "account_id": account,
            "payload": {**request["payload"], "quantity": "200"},
        },
        headers=bearer("op-1", [Role.OPERATOR]),
    )
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "subject_conflict"
    ok = await client.post(
        f"/hitl/requests/{request['request_id']}/approve",
        json={"payload_hash": request["payload_hash"], "reason": "checked"},
        headers=bearer("d1", [Role.DIRECTOR]),
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "approved"
    assert ok.json()["decision"]["approvers"] == ["d1"]


async def test_orders_are_requested_only_through_oms_events(client: httpx.AsyncClient) -> None:
    account = new_account()
    body = {"subject_type": "order", "subject_id": "ord-1", "account_id": account, "payload": {"quantity": "1"}}
    refused = await client.post("/hitl/requests", json=body, headers=bearer("op-1", [Role.OPERATOR]))
    assert refused.status_code == 422
    assert "subject_type" in refused.text


async def test_self_approval_stale_otp_and_non_directors_are_refused(client: httpx.AsyncClient) -> None:
    account = new_account()
    request = await open_request(client, account, requester="dir-self")
    path = f"/hitl/requests/{request['request_id']}/approve"
    body = {"payload_hash": request["payload_hash"]}
    own = await client.post(path, json=body, headers=bearer("dir-self", [Role.DIRECTOR]))
    assert own.status_code == 403
    assert own.json()["error"]["code"] == "self_approval"
    no_otp = await client.post(path, json=body, headers=bearer("d2", [Role.DIRECTOR], otp=False))
    assert no_otp.status_code == 403
    assert no_otp.json()["error"]["code"] == "fresh_otp_required"
    old = datetime.now(UTC) - timedelta(seconds=121)
    stale_token = ISSUER.issue(
        "d2", [Role.DIRECTOR], scopes=default_scopes([Role.DIRECTOR]), accounts=["*"], amr=["pwd", "otp"], auth_time=old
    )
    stale = await client.post(path, json=body, headers={"Authorization": f"Bearer {stale_token}"})
    assert stale.status_code == 403
    assert stale.json()["error"]["code"] == "fresh_otp_required"
    admin = await client.post(path, json=body, headers=bearer("a1", [Role.ADMIN]))
    assert admin.status_code == 403
    foreign = await client.post(path, json=body, headers=bearer("d3", [Role.DIRECTOR], accounts=("other",)))
    assert foreign.status_code == 404
    state = await client.get(f"/hitl/requests/{request['request_id']}", headers=bearer("d2", [Role.DIRECTOR]))
    assert state.json()["status"] == "pending"
    assert state.json()["votes"] == []


async def test_quorum_of_two_one_vote_per_director(client: httpx.AsyncClient) -> None:
    account = new_account()
    rules = {"quorum": 2, "directors": ["q1", "q2", "q3"]}
    # Naming the directors narrows "every director" to three: a director with a fresh TOTP proof sets it.
    put = await client.put(f"/hitl/policies/{account}", json=rules, headers=bearer("d0", [Role.DIRECTOR]))
    assert put.status_code == 200, put.text
    request = await open_request(client, account)
    assert request["quorum"] == 2
    assert request["eligible_directors"] == ["q1", "q2", "q3"]
    path = f"/hitl/requests/{request['request_id']}/approve"
    body = {"payload_hash": request["payload_hash"]}
    outsider = await client.post(path, json=body, headers=bearer("q9", [Role.DIRECTOR]))
    assert outsider.status_code == 403
    assert outsider.json()["error"]["code"] == "not_an_eligible_director"
    first = await client.post(path, json=body, headers=bearer("q1", [Role.DIRECTOR]))
    assert first.json()["status"] == "pending"
    twice = await client.post(path, json=body, headers=bearer("q1", [Role.DIRECTOR]))
    assert twice.status_code == 409
    assert twice.json()["error"]["code"] == "already_voted"
    second = await client.post(path, json=body, headers=bearer("q2", [Role.DIRECTOR]))
    assert second.json()["status"] == "approved"
    assert sorted(second.json()["decision"]["approvers"]) == ["q1", "q2"]
    late = await client.post(path, json=body, headers=bearer("q3", [Role.DIRECTOR]))
    assert late.status_code == 409
    assert late.json()["error"]["code"] == "request_already_decided"


async def test_reject_needs_a_reason_and_tells_the_requester(client: httpx.AsyncClient) -> None:
    account = new_account()
    request = await open_request(client, account, requester="op-told")
    path = f"/hitl/requests/{request['request_id']}/reject"
    blank = await client.post(
        path, json={"payload_hash": request["payload_hash"], "reason": "  "}, headers=bearer("d1", [Role.DIRECTOR])
    )
    assert blank.status_code == 422
    assert "reason" in blank.text
    missing = await client.post(
        path, json={"payload_hash": request["payload_hash"]}, headers=bearer("d1", [Role.DIRECTOR])
    )
    assert missing.status_code == 422
    assert "reason" in missing.text
    done = await client.post(
        path, json={"payload_hash": request["payload_hash"], "reason": "too big"}, headers=bearer("d1", [Role.DIRECTOR])
    )
    assert done.json()["status"] == "rejected"
    assert done.json()["decision"]["reason"] == "too big"
    told = await client.get("/hitl/notifications", headers=bearer("op-told", [Role.OPERATOR]))
    assert [n["kind"] for n in told.json()] == ["request_rejected"]
    history = await client.get("/hitl/requests", params={"status": "decided"}, headers=bearer("au", [Role.AUDITOR]))
    assert request["request_id"] in {item["request_id"] for item in history.json()["items"]}
    pending = await client.get("/hitl/requests", params={"status": "pending"}, headers=bearer("au", [Role.AUDITOR]))
    assert request["request_id"] not in {item["request_id"] for item in pending.json()["items"]}


async def test_expiry_worker_expires_publishes_and_tells_the_requester(
    client: httpx.AsyncClient, settings_hitl: HitlSettings, kafka_bootstrap: str
) -> None:
    account = new_account()
    await client.put(f"/hitl/policies/{account}", json={"expiry_s": 1}, headers=bearer("a1", [Role.ADMIN]))
    request = await open_request(client, account, requester="op-exp")

    async def expired() -> bool:
        got = await client.get(f"/hitl/requests/{request['request_id']}", headers=bearer("d1", [Role.DIRECTOR]))
        return bool(got.json()["status"] == "expired")

    await eventually(expired, timeout_s=10, message="request expired by the worker")
    late = await client.post(
        f"/hitl/requests/{request['request_id']}/approve",
        json={"payload_hash": request["payload_hash"]},
        headers=bearer("d1", [Role.DIRECTOR]),
    )
    assert late.status_code == 409
    told = await client.get("/hitl/notifications", headers=bearer("op-exp", [Role.OPERATOR]))
    assert [n["kind"] for n in told.json()] == ["request_expired"]
    decisions = await read_decisions(kafka_bootstrap, settings_hitl.decisions_topic, {request["subject_id"]})
    assert [d.payload["decision"] for d in decisions] == ["expired"]
    assert decisions[0].payload["payload_hash"] == request["payload_hash"]


async def read_decisions(bootstrap: str, topic: str, subjects: set[str], timeout_s: float = 15) -> list[Envelope]:
    """Every ApprovalDecided for `subjects` on `topic`, once each subject has at least one."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=uuid.uuid4().hex
    )
    await consumer.start()
    found: list[Envelope] = []
    try:

        async def all_seen() -> bool:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    envelope = Envelope.from_bytes(record.value)
                    if envelope.payload.get("subject_id") in subjects:
                        found.append(envelope)
            return {str(e.payload["subject_id"]) for e in found} >= subjects

        await eventually(all_seen, timeout_s=timeout_s, message="decisions published")
        # Drain a little more so that a duplicate decision would be seen too.
        batch = await consumer.getmany(timeout_ms=500)
        found += [
            e
            for records in batch.values()
            for r in records
            if (e := Envelope.from_bytes(r.value)).payload.get("subject_id") in subjects
        ]
    finally:
        await consumer.stop()
    return found


async def test_approval_requested_event_opens_one_request(
    client: httpx.AsyncClient, settings_hitl: HitlSettings, kafka_bootstrap: str
) -> None:
    account = new_account()
    order_id = f"ord-{uuid.uuid4().hex[:10]}"
    envelope = Envelope.new(
        type="ApprovalRequested", producer="oms", aggregate_id=order_id, payload=order_payload(account, order_id)
    )
    producer = EventProducer(bootstrap=kafka_bootstrap, client_id="test-oms")
    await producer.start()
    try:
        await producer.send(settings_hitl.order_events_topic, envelope)
        await producer.send(settings_hitl.order_events_topic, envelope)  # redelivered: the inbox drops it
    finally:
        await producer.stop()

    async def opened() -> list[dict[str, Any]]:
        page = await client.get("/hitl/requests", params={"account_id": account}, headers=bearer("d1", [Role.DIRECTOR]))
        return list(page.json()["items"])

    items = await eventually(opened, timeout_s=20, message="request opened from the event")
    assert len(items) == 1
    assert items[0]["source"] == "event"
    assert items[0]["requested_by"] == "op-1"
    assert items[0]["payload"] == dict(envelope.payload)
    assert items[0]["payload_hash"] == payload_hash(dict(envelope.payload))
