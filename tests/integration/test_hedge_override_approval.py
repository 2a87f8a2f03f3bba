"""Hedge overrides under the account's hitl policy (issue 5), against real PostgreSQL, Redis and Kafka: with
`hedge_override` true the override waits (202, not effective) and asks the approval service through the outbox;
an `ApprovalDecided` on the decisions topic makes it effective or drops it; without a policy key nothing changes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from services.hedge.adapters import HedgeAdapters
from services.hedge.app import create_app
from services.hedge.approval import OverrideApprovalPolicy
from services.hedge.config import HedgeSettings
from services.hedge.errors import ApprovalPolicyUnavailable
from services.hitl.app import create_app as create_hitl_app
from services.hitl.consumers import request_from_event
from services.hitl.schemas import RequestCreate
from shared.app_factory import adapters_of
from shared.auth.keys import public_key_pem
from shared.auth.roles import Role
from shared.config import AetherSettings
from shared.contracts.approvals import ApprovalDecided, ApprovalDecision, ApprovalPolicyValue
from shared.contracts.mirror import encode_mirror
from shared.contracts.registry import new_envelope
from shared.events import Envelope
from shared.events.producer import EventProducer
from shared.mirror_keys import approval_policy_key
from tests.helpers import eventually, own_database
from tests.integration.test_hitl_api import bearer, hitl_settings, running
from tests.kit.auth import KEY
from tests.kit.events import TopicReader
from tests.kit.factories import account_id
from tests.kit.hedge import DIRECTOR, RISK, T0, VIEWER, Hedge

Start = Callable[[], AbstractAsyncContextManager[Hedge]]


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hedge_approval") as url:
        yield url


@pytest.fixture
def topics() -> dict[str, str]:
    names = ("commands", "order_events", "recommendation", "target", "marketdata_book", "marketdata_trade", "decisions")
    return {f"{name}_topic": f"test.hedge-appr-{name.replace('_', '-')}.{uuid.uuid4().hex[:10]}.v1" for name in names}


@pytest.fixture
def start_hedge(settings: AetherSettings, module_database_url: str, topics: dict[str, str]) -> Start:
    hedge_settings = HedgeSettings(
        **settings.model_dump(exclude={"jwt_public_key", "service_name", "log_level", "database_url"}),
        database_url=SecretStr(module_database_url),
        jwt_public_key=SecretStr(public_key_pem(KEY.public_key()).decode()),
        log_level="WARNING",
        vol_sample_interval_s=0,
        volatility_source="ewma",  # these tests drive the volatility with prices
        revalue_interval_s=3_600,
        orders_enabled=False,
        hedge_symbol=f"X{uuid.uuid4().hex[:8].upper()}/USD",
        **topics,
    )

    @asynccontextmanager
    async def start() -> AsyncIterator[Hedge]:
        app = create_app(hedge_settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://hedge") as client:
                await eventually(lambda: _ready(client), timeout_s=20, message="hedge ready")
                yield Hedge(client, adapters_of(app.state.runtime, HedgeAdapters))

    return start


async def _ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 200


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()


async def set_policy(redis: Redis, account: str, *, hedge_override: bool) -> None:
    """What the hitl mirror writes (the contract's ApprovalPolicyValue), expiring after the test."""
    value = ApprovalPolicyValue(account_id=account, version=1, hedge_override=hedge_override, created_at=T0)
    await redis.set(approval_policy_key(account), encode_mirror(value), ex=300)


def override_body(fraction: str = "0.3", reason: str = "event risk into FOMC") -> dict[str, str]:
    expires = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    return {"target_fraction": fraction, "reason": reason, "expires_at": expires}


def decided(subject_id: str, decision: str, reason: str) -> Envelope:
    """What the hitl service publishes on hitl.decisions.v1."""
    fields: dict[str, Any] = {
        "request_id": uuid.uuid4().hex,
        "subject_type": "hedge_override",
        "subject_id": subject_id,
        "account_id": subject_id.split(":")[1],
        "decision": decision,
        "reason": reason,
        "payload_hash": "0" * 64,
        "decided_at": datetime.now(UTC).isoformat(),
        "approvers": ["dora"] if decision == "approved" else [],
    }
    if decision in {known.value for known in ApprovalDecision}:
        return new_envelope(ApprovalDecided.model_validate(fields), producer="hitl", aggregate_id=subject_id)
    # A decision the contract does not know: what a producer that broke it would send.
    return Envelope.new(type=ApprovalDecided.TYPE, producer="hitl", aggregate_id=subject_id, payload=fields)


async def decide(bootstrap: str, topic: str, subject_id: str, decision: str, reason: str, times: int = 1) -> None:
    """Publish an ApprovalDecided (`times` > 1: redelivered copies)."""
    envelope = decided(subject_id, decision, reason)
    producer = EventProducer(bootstrap=bootstrap, client_id="hedge-approval-test")
    await producer.start()
    try:
        for _ in range(times):
            await producer.send(topic, envelope, key=subject_id)
    finally:
        await producer.stop()


async def history(hedge: Hedge, account: str) -> list[tuple[str, str | None, str]]:
    response = await hedge.client.get(f"/hedge/overrides/{account}/history", headers=VIEWER)
    assert response.status_code == 200, response.text
    return [(h["action"], h["target_fraction"], h["reason"]) for h in response.json()]


async def audit_actions(database_url: str, account: str) -> list[str]:
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                text("SELECT action FROM audit.audit_log WHERE chain = :chain ORDER BY position"),
                {"chain": f"hedge:{account}"},
            )
            return [a for a in rows.scalars() if a.startswith("hedge.override")]
    finally:
        await engine.dispose()


async def pending_put(hedge: Hedge, account: str, body: dict[str, str]) -> dict[str, Any]:
    await hedge.price("100", T0)
    await hedge.holdings(account, "0", "100")
    response = await hedge.client.put(f"/hedge/overrides/{account}", json=body, headers=RISK)
    assert response.status_code == 202, response.text
    status: dict[str, Any] = response.json()
    return status


async def test_override_waits_for_approval_then_becomes_effective(
    start_hedge: Start, redis: Redis, topics: dict[str, str], kafka_bootstrap: str, module_database_url: str
) -> None:
    account = account_id()
    await set_policy(redis, account, hedge_override=True)
    async with TopicReader(kafka_bootstrap, topics["target_topic"]) as targets, start_hedge() as hedge:
        status = await pending_put(hedge, account, override_body())
        pending = status["pending_override"]
        assert (pending["status"], pending["target_fraction"], pending["requested_by"]) == (
            "pending_approval",
            "0.3",
            "user:alice",
        )
        assert status["override"] is None
        assert status["effective_target"] == status["computed_target"] == "0"
        assert (await hedge.status(account))["pending_override"] == pending

        # The approval request goes out through the outbox; hitl opens it with alice as the requester.
        asked = [e for e in await targets.until(1) if e.type == "ApprovalRequested"]
        assert len(asked) == 1
        assert asked[0].payload["subject_id"] == pending["subject_id"]
        assert asked[0].payload["target_fraction"] == "0.3"
        opened = request_from_event(asked[0])
        assert opened is not None
        assert (opened.subject_type, opened.requested_by, opened.account_id) == ("hedge_override", "alice", account)

        await decide(kafka_bootstrap, topics["decisions_topic"], pending["subject_id"], "approved", "ok", times=2)

        async def effective() -> bool:
            return (await hedge.status(account))["effective_target"] == "0.3"

        await eventually(effective, message="approved override effective")
        status = await hedge.status(account)
        assert status["pending_override"] is None
        assert (status["override"]["target_fraction"], status["override"]["set_by"]) == ("0.3", "user:alice")
        assert await history(hedge, account) == [
            ("approved", "0.3", "event risk into FOMC"),
            ("approval_requested", "0.3", "event risk into FOMC"),
        ]
    assert await audit_actions(module_database_url, account) == [
        "hedge.override_pending_approval",
        "hedge.override_approved",
    ]


async def test_rejected_override_is_dropped_and_a_late_approval_changes_nothing(
    start_hedge: Start, redis: Redis, topics: dict[str, str], kafka_bootstrap: str, module_database_url: str
) -> None:
    account = account_id()
    await set_policy(redis, account, hedge_override=True)
    async with start_hedge() as hedge:
        pending = (await pending_put(hedge, account, override_body("0.6", "hedge harder")))["pending_override"]
        await decide(kafka_bootstrap, topics["decisions_topic"], pending["subject_id"], "rejected", "not now")

        async def dropped() -> bool:
            return (await hedge.status(account))["pending_override"] is None

        await eventually(dropped, message="rejected override dropped")
        # A decision for a subject that is no longer pending is ignored.
        await decide(kafka_bootstrap, topics["decisions_topic"], pending["subject_id"], "approved", "late")
        second = await pending_put(hedge, account, override_body("0.2", "smaller"))
        await decide(
            kafka_bootstrap, topics["decisions_topic"], second["pending_override"]["subject_id"], "expired", ""
        )

        async def expired() -> bool:
            return (await hedge.status(account))["pending_override"] is None

        await eventually(expired, message="expired override dropped")
        status = await hedge.status(account)
        assert status["override"] is None
        assert status["effective_target"] == "0"
        assert await history(hedge, account) == [
            ("expired", "0.2", "expired: expired"),
            ("approval_requested", "0.2", "smaller"),
            ("rejected", "0.6", "rejected: not now"),
            ("approval_requested", "0.6", "hedge harder"),
        ]
    assert await audit_actions(module_database_url, account) == [
        "hedge.override_pending_approval",
        "hedge.override_rejected",
        "hedge.override_pending_approval",
        "hedge.override_expired",
    ]


async def test_an_unknown_decision_is_dead_lettered_and_the_override_stays_pending(
    start_hedge: Start, redis: Redis, topics: dict[str, str], kafka_bootstrap: str
) -> None:
    """A decision value outside the contract is a violation (to the DLQ with the reason), never a rejection."""
    account = account_id()
    await set_policy(redis, account, hedge_override=True)
    dead_letters = f"{topics['decisions_topic']}.dlq"
    async with TopicReader(kafka_bootstrap, dead_letters) as dlq, start_hedge() as hedge:
        pending = (await pending_put(hedge, account, override_body("0.5", "hedge half")))["pending_override"]
        await decide(kafka_bootstrap, topics["decisions_topic"], pending["subject_id"], "approved_maybe", "?")
        (dead,) = await dlq.until(1, timeout_s=30)
        headers = dict(dlq.headers[0])
        assert headers["reason"] == b"contract_violation"
        assert dead.payload["decision"] == "approved_maybe"
        status = await hedge.status(account)
        assert status["pending_override"] == pending
        assert status["override"] is None
        assert [action for action, _, _ in await history(hedge, account)] == ["pending_approval"]
        # The real decision that follows is applied.
        await decide(kafka_bootstrap, topics["decisions_topic"], pending["subject_id"], "approved", "ok")

        async def effective() -> bool:
            return (await hedge.status(account))["effective_target"] == "0.5"

        await eventually(effective, message="approved override effective after the dead letter")


async def test_without_a_policy_or_with_the_rule_off_the_override_applies_at_once(
    start_hedge: Start, redis: Redis
) -> None:
    plain, rule_off = account_id(), account_id()
    await set_policy(redis, rule_off, hedge_override=False)
    async with start_hedge() as hedge:
        await hedge.price("100", T0)
        for account in (plain, rule_off):
            await hedge.holdings(account, "0", "100")
            response = await hedge.client.put(f"/hedge/overrides/{account}", json=override_body(), headers=DIRECTOR)
            assert response.status_code == 200, response.text
            assert response.json()["effective_target"] == "0.3"
            assert response.json()["pending_override"] is None
            assert [action for action, _, _ in await history(hedge, account)] == ["set"]


async def test_an_unreadable_policy_is_a_503_and_nothing_is_stored(start_hedge: Start, redis: Redis) -> None:
    account = account_id()
    await redis.set(f"hitl:policy:account:{account}", "not json", ex=300)
    async with start_hedge() as hedge:
        await hedge.price("100", T0)
        await hedge.holdings(account, "0", "100")
        response = await hedge.client.put(f"/hedge/overrides/{account}", json=override_body(), headers=RISK)
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "approval_policy_unavailable"
        assert await history(hedge, account) == []


def test_hitl_refuses_rest_requests_for_hedge_overrides() -> None:
    """Only the hedge service's event opens them: a REST request could claim a pending override's subject id."""
    with pytest.raises(ValidationError, match="subject_type"):
        RequestCreate(subject_type="hedge_override", subject_id="hedge-override:a:1", account_id="a", payload={})


@pytest.fixture(scope="module")
def hitl_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hedge_approval_hitl") as url:
        yield url


async def test_through_the_real_hitl_app_the_requester_cannot_approve_and_a_director_can(
    start_hedge: Start, settings: AetherSettings, hitl_database_url: str, topics: dict[str, str], redis: Redis
) -> None:
    account = account_id()
    hitl_app = create_hitl_app(
        hitl_settings(
            settings,
            hitl_database_url,
            hedge_events_topic=topics["target_topic"],
            decisions_topic=topics["decisions_topic"],
            policy_mirror_interval_s=0.2,
        )
    )
    async with running(hitl_app) as hitl, start_hedge() as hedge:
        rules = {"hedge_override": True, "new_instrument": False}
        stored = await hitl.put(f"/hitl/policies/{account}", json=rules, headers=bearer("gov", [Role.DIRECTOR]))
        assert stored.status_code == 200, stored.text

        async def mirrored() -> bool:
            return await redis.get(f"hitl:policy:account:{account}") is not None

        await eventually(mirrored, message="policy mirrored to Redis")
        pending = (await pending_put(hedge, account, override_body("0.4", "cover the unlock")))["pending_override"]

        async def opened() -> list[dict[str, Any]]:
            page = await hitl.get(
                "/hitl/requests", params={"account_id": account}, headers=bearer("d", [Role.DIRECTOR])
            )
            return list(page.json()["items"])

        (request,) = await eventually(opened, timeout_s=20, message="hitl request opened from the hedge event")
        assert (request["subject_type"], request["subject_id"]) == ("hedge_override", pending["subject_id"])
        assert request["requested_by"] == "alice"
        path = f"/hitl/requests/{request['request_id']}/approve"
        vote = {"payload_hash": request["payload_hash"]}
        own = await hitl.post(path, json=vote, headers=bearer("alice", [Role.DIRECTOR]))
        assert own.status_code == 403, own.text
        assert (await hedge.status(account))["effective_target"] == "0"
        ok = await hitl.post(path, json=vote, headers=bearer("dora", [Role.DIRECTOR]))
        assert ok.status_code == 200, ok.text

        async def effective() -> bool:
            return (await hedge.status(account))["effective_target"] == "0.4"

        await eventually(effective, timeout_s=20, message="override effective after the director's approval")
        assert (await history(hedge, account))[0][:2] == ("approved", "0.4")


async def test_redis_unreachable_is_policy_unavailable_not_no_policy() -> None:
    """A Redis that does not answer (a closed port) is a 503 error, never 'no policy, apply at once'."""
    unreachable = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5, socket_timeout=0.5)
    try:
        with pytest.raises(ApprovalPolicyUnavailable) as raised:
            await OverrideApprovalPolicy(unreachable).needs_approval("acct-x")
        assert raised.value.status_code == 503
    finally:
        await unreachable.aclose()
