"""The rate limiter verifies the bearer token and the auth dependency reuses that check within the request: one
signature check per request, while revocation is still asked by the dependency every time."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from shared.auth.dependencies import CurrentPrincipal
from shared.auth.roles import Role
from shared.auth.tokens import InvalidToken, Principal, TokenRejection, TokenVerifier
from shared.rate_limit import BucketLimit, RateLimitMiddleware, RouteClass, TokenBucketLimiter
from tests.kit.auth import PUBLIC_PEM, VERIFIER, bearer


class CountingVerifier(TokenVerifier):
    """The real verifier, counting the signature checks it makes."""

    def __init__(self, revoked: set[str]) -> None:
        async def is_revoked(token_id: str) -> bool:
            return token_id in revoked

        super().__init__(PUBLIC_PEM, VERIFIER.issuer, VERIFIER.audience, is_revoked=is_revoked)
        self.checks = 0

    def verify_without_revocation(self, token: str) -> Principal:
        self.checks += 1
        return super().verify_without_revocation(token)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def _app(verifier: TokenVerifier, redis: Redis) -> FastAPI:
    app = FastAPI()
    app.state.token_verifier = verifier
    limiter = TokenBucketLimiter(redis, dict.fromkeys(RouteClass, BucketLimit(rate_per_s=100.0, burst=100)))
    app.add_middleware(RateLimitMiddleware, service="verify-once", verifier=verifier, limiter=lambda: limiter)

    @app.get("/me")
    async def me(principal: CurrentPrincipal) -> dict[str, Any]:
        return {"subject": principal.subject}

    return app


async def test_one_signature_check_per_request_and_revocation_still_refuses(redis: Redis) -> None:
    revoked: set[str] = set()
    verifier = CountingVerifier(revoked)
    subject = f"verify-once-{uuid.uuid4().hex[:8]}"
    access = bearer(Role.VIEWER, subject=subject)
    headers = {"Authorization": f"Bearer {access}"}
    transport = httpx.ASGITransport(app=_app(verifier, redis))
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        answer = await client.get("/me", headers=headers)
        assert (answer.status_code, answer.json()) == (200, {"subject": subject})
        assert verifier.checks == 1

        revoked.add(VERIFIER.verify_without_revocation(access).token_id)
        refused = await client.get("/me", headers=headers)
        assert refused.status_code == 401
        assert verifier.checks == 2


def test_a_check_is_reused_only_for_the_same_token_by_the_same_key_issuer_and_audience() -> None:
    token = bearer(Role.VIEWER)
    state: dict[str, Any] = {}
    principal = VERIFIER.verify_once(token, state)
    other_audience = TokenVerifier(PUBLIC_PEM, VERIFIER.issuer, "another-audience")
    with pytest.raises(InvalidToken) as refused:
        other_audience.verify_once(token, state)
    assert refused.value.reason is TokenRejection.WRONG_AUDIENCE
    other_token = bearer(Role.VIEWER, subject="bob")
    assert VERIFIER.verify_once(other_token, state).subject == "bob"
    assert principal.subject != "bob"
