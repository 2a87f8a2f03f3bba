"""S8: floods are refused, not served. 10x a principal's limit on loopback against the OMS: served past it 0.

Two OMS instances (two uvicorn servers, one Redis) share each bucket; another principal and an unauthenticated
client have their own; Redis down is a 503, never a request let through. Limits are tiny settings here (burst 20,
a refill so slow that none arrives during the test), so the expected count is exact.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from shared.auth.roles import Role
from shared.config import AetherSettings, Environment
from shared.rate_limit import RATE_LIMITED, RouteClass, TokenBucketLimiter, limits_from, route_class
from tests.helpers import own_database
from tests.kit.auth import token
from tests.kit.loopback import on_loopback
from tests.kit.oms import paper_oms
from tests.kit.paper import PaperMarket
from tests.kit.toxiproxy import free_port

BURST = 20
FLOOD = 10 * BURST
# One token per 1000 s: no refill lands inside the test, so "served" must equal BURST exactly.
TINY_LIMITS: dict[str, Any] = {
    f"rate_limit_{kind.value}_{field}": value
    for kind in RouteClass
    for field, value in (("per_s", 0.001), ("burst", BURST))
}


@pytest.fixture(scope="module")
def module_database_url(database_url: str) -> Iterator[str]:
    """The OMS reconciles every account of its database at start-up: this module keeps its own."""
    with own_database(database_url, "s8_rate_limits") as url:
        yield url


@asynccontextmanager
async def oms_instances(
    count: int, settings: AetherSettings, database_url: str, market: PaperMarket
) -> AsyncIterator[list[str]]:
    async with AsyncExitStack() as stack:
        urls = []
        for _ in range(count):
            app, _client = await stack.enter_async_context(paper_oms(settings, database_url, market, **TINY_LIMITS))
            urls.append(await stack.enter_async_context(on_loopback(app)))
        yield urls


async def flood(urls: list[str], path: str, headers: dict[str, str], size: int) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=50)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return list(
            await asyncio.gather(*(client.get(f"{urls[i % len(urls)]}{path}", headers=headers) for i in range(size)))
        )


def served(answers: list[httpx.Response]) -> int:
    return sum(answer.status_code != 429 for answer in answers)


def assert_refusals(answers: list[httpx.Response], kind: RouteClass) -> None:
    for answer in answers:
        if answer.status_code == 429:
            assert int(answer.headers["Retry-After"]) >= 1
            error = answer.json()["error"]
            assert error["code"] == RATE_LIMITED
            assert error["details"]["route_class"] == kind.value


def test_route_classes() -> None:
    assert route_class("/orders") is RouteClass.ORDERS
    assert route_class("/orders/abc/cancel") is RouteClass.ORDERS
    assert route_class("/ordersx") is RouteClass.DEFAULT
    assert route_class("/reports/nav") is RouteClass.REPORTS
    assert route_class("/auth/login") is RouteClass.LOGIN
    assert route_class("/hitl/ui/login") is RouteClass.LOGIN
    assert route_class("/positions") is RouteClass.DEFAULT


async def test_flood_served_past_limit_is_zero_across_two_instances(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    trader = token(Role.OPERATOR, subject=f"s8-{uuid.uuid4().hex[:10]}")
    async with oms_instances(2, settings, module_database_url, paper_market) as urls:
        orders = await flood(urls, "/orders", trader, FLOOD)
        assert served(orders) == BURST, [a.status_code for a in orders if a.status_code != 429][:5]
        assert all(a.status_code == 200 for a in orders if a.status_code != 429)
        assert_refusals(orders, RouteClass.ORDERS)
        # Another class of the same principal has its own bucket, as has another principal on the same class.
        positions = await flood(urls, "/positions", trader, 2 * BURST)
        assert served(positions) == BURST
        other = await flood(urls, "/orders", token(Role.OPERATOR, subject=f"s8-{uuid.uuid4().hex[:10]}"), BURST)
        assert served(other) == BURST
        # A token that does not verify is limited by the client's address, not by the subject it claims.
        forged = {"Authorization": "Bearer not.a.token"}
        anonymous = await flood(urls, "/orders", forged, 2 * BURST)
        assert served(anonymous) <= BURST
        assert all(a.status_code in (401, 429) for a in anonymous)
        # Probes and /metrics are never limited.
        async with httpx.AsyncClient() as client:
            for _ in range(BURST + 5):
                assert (await client.get(f"{urls[0]}/healthz")).status_code == 200
            metrics = (await client.get(f"{urls[0]}/metrics")).text
        assert 'aether_rate_limited_requests_total{route_class="orders",service="oms"}' in metrics


async def test_redis_down_refuses_with_503(
    settings: AetherSettings, module_database_url: str, paper_market: PaperMarket
) -> None:
    async with paper_oms(settings, module_database_url, paper_market, **TINY_LIMITS) as (app, client):
        dead = Redis(host="127.0.0.1", port=free_port(), socket_connect_timeout=1)
        app.state.rate_limiter = TokenBucketLimiter(dead, limits_from(app.state.runtime.settings))
        try:
            answer = await client.get("/orders", headers=token(Role.OPERATOR))
        finally:
            await dead.aclose()
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "backend_unavailable"


def test_production_refuses_disabled_limits() -> None:
    with pytest.raises(ValueError, match="AETHER_RATE_LIMIT_ENABLED"):
        AetherSettings(env=Environment.PRODUCTION, rate_limit_enabled=False)
