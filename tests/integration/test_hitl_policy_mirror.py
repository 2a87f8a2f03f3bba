"""The hitl service mirrors each account's current approval policy to Redis (`hitl:policy:account:<id>`) for
the OMS's pre-trade fast path: after a version commits, at start-up and every `policy_mirror_interval_s`."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from redis.asyncio import Redis

from services.hitl.adapters import hitl_adapters
from services.hitl.app import create_app
from services.hitl.config import HitlSettings
from services.hitl.mirror import PolicyMirror
from shared.auth.roles import Role
from shared.config import AetherSettings
from tests.helpers import eventually, own_database
from tests.integration.test_hitl_api import bearer, hitl_settings, running


def director() -> dict[str, str]:
    """A director with a TOTP proof made now: weakening a policy needs a fresh one (a module constant would go
    stale in a long run)."""
    return bearer("d1", [Role.DIRECTOR])


@pytest.fixture(scope="module")
def mirror_database_url(database_url: str) -> Iterator[str]:
    with own_database(database_url, "hitl_mirror") as url:
        yield url


@pytest.fixture
def settings_hitl(settings: AetherSettings, mirror_database_url: str) -> HitlSettings:
    return hitl_settings(settings, mirror_database_url, policy_mirror_interval_s=0.2)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def mirrored(redis: Redis, account: str) -> dict[str, Any] | None:
    raw = await redis.get(f"hitl:policy:account:{account}")
    return None if raw is None else dict(json.loads(raw))


async def test_a_committed_version_is_in_redis_when_the_put_answers(settings_hitl: HitlSettings, redis: Redis) -> None:
    account = f"mir-{uuid.uuid4().hex[:8]}"
    async with running(create_app(settings_hitl)) as http:
        assert await mirrored(redis, account) is None  # no stored policy: no key (the OMS keeps its threshold)
        first = await http.put(
            f"/hitl/policies/{account}", json={"notional_threshold": "1000.50", "quorum": 1}, headers=director()
        )
        assert first.status_code == 200, first.text
        value = await mirrored(redis, account)
        assert value is not None
        # The mirror writes the contract's canonical decimal text (ApprovalPolicyValue): "1000.50" -> "1000.5".
        assert (value["version"], value["notional_threshold"], value["account_id"]) == (1, "1000.5", account)
        assert value["new_instrument"] is True
        assert value["expiry_s"] == 3600
        second = await http.put(f"/hitl/policies/{account}", json={"new_instrument": False}, headers=director())
        assert second.json()["version"] == 2
        value = await mirrored(redis, account)
        assert value is not None
        assert (value["version"], value["notional_threshold"], value["new_instrument"]) == (2, None, False)


async def test_a_lost_key_is_rewritten_by_the_loop_and_at_start_up(settings_hitl: HitlSettings, redis: Redis) -> None:
    account = f"mir-{uuid.uuid4().hex[:8]}"
    async with running(create_app(settings_hitl)) as http:
        put = await http.put(f"/hitl/policies/{account}", json={"notional_threshold": "250"}, headers=director())
        assert put.status_code == 200
        assert await redis.delete(f"hitl:policy:account:{account}") == 1
        await eventually(lambda: _has_version(redis, account, 1), timeout_s=5, message="key re-mirrored")
    await redis.delete(f"hitl:policy:account:{account}")
    settings_slow = settings_hitl.model_copy(update={"policy_mirror_interval_s": 300.0})
    async with running(create_app(settings_slow)):  # only the start-up pass can write it within 5 s
        await eventually(lambda: _has_version(redis, account, 1), timeout_s=5, message="key mirrored at start-up")


async def test_redis_down_at_commit_keeps_the_version_and_the_loop_catches_up(
    settings_hitl: HitlSettings, redis: Redis
) -> None:
    account = f"mir-{uuid.uuid4().hex[:8]}"
    app = create_app(settings_hitl)
    async with running(app) as http:
        assert (await http.put(f"/hitl/policies/{account}", json={}, headers=director())).status_code == 200
        mirror: PolicyMirror = hitl_adapters(app.state.runtime).mirror
        healthy, broken = mirror.redis, Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.5)
        mirror.redis = broken
        try:
            put = await http.put(f"/hitl/policies/{account}", json={"notional_threshold": "5"}, headers=director())
            assert put.status_code == 200
            assert put.json()["version"] == 2
            stale = await mirrored(redis, account)
            assert stale is not None
            assert stale["version"] == 1
            assert mirror.failing is True
        finally:
            mirror.redis = healthy
            await broken.aclose()
        await eventually(lambda: _has_version(redis, account, 2), timeout_s=5, message="caught up after Redis")
        assert mirror.failing is False


async def _has_version(redis: Redis, account: str, version: int) -> bool:
    value = await mirrored(redis, account)
    return value is not None and value["version"] == version
