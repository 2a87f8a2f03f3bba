"""Per-principal, per-route-class rate limits (RELIABILITY S8): a token bucket in Redis shared by every replica.

The principal is the verified bearer token's subject, else the client address (unauthenticated routes, or a
token that does not verify: a forged subject never buys a fresh bucket). The route class comes from the path
(`route_class`). One Lua script refills and takes a token atomically, on Redis's own clock, so replicas of a
service share one bucket per (class, principal). A refused request answers 429 `rate_limited` with
`Retry-After`, before the body is read and before the route runs.

Redis unreachable: the request is refused with 503 `backend_unavailable` (the platform's answer for a backend
that is down; a limiter that lets everything through when Redis fails would serve the very flood it exists to
refuse). The probes and `/metrics` are never limited.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.types import ASGIApp, Receive, Scope, Send

from shared.auth.tokens import InvalidToken, TokenVerifier
from shared.config import AetherSettings
from shared.errors import BACKEND_UNAVAILABLE, error_response
from shared.observability.logging import get_logger
from shared.observability.metrics import counter

log = get_logger(__name__)

RATE_LIMITED = "rate_limited"
KEY_PREFIX = "ratelimit"
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})

rate_limited_total = counter(
    "aether_rate_limited_requests_total",
    "Requests refused with 429 by the per-principal rate limit",
    ["service", "route_class"],
)


class RouteClass(StrEnum):
    ORDERS = "orders"
    REPORTS = "reports"
    LOGIN = "login"
    DEFAULT = "default"


# Longest prefix first; a path matches a prefix exactly or continues it with "/".
_CLASS_PREFIXES: tuple[tuple[str, RouteClass], ...] = (
    ("/auth/login", RouteClass.LOGIN),
    ("/auth/refresh", RouteClass.LOGIN),
    ("/hitl/ui/login", RouteClass.LOGIN),
    ("/orders", RouteClass.ORDERS),
    ("/reports", RouteClass.REPORTS),
)


def route_class(path: str) -> RouteClass:
    """The rate-limit class of a request path (orders, reports, login, else default)."""
    for prefix, kind in _CLASS_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return kind
    return RouteClass.DEFAULT


@dataclass(frozen=True)
class BucketLimit:
    """A token bucket: `rate_per_s` tokens refill per second, at most `burst` held."""

    rate_per_s: float
    burst: int


# KEYS[1] the bucket; ARGV rate per second, burst. Returns {allowed 0/1, milliseconds until one token}.
# TIME is Redis's clock: every replica refills against the same one (scripts replicate by effects, Redis >= 5).
BUCKET_SCRIPT_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
if now > ts then
  tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
  ts = now
end
local allowed = 0
local wait_ms = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait_ms = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(ts))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return {allowed, wait_ms}
"""


def limits_from(settings: AetherSettings) -> dict[RouteClass, BucketLimit]:
    """The bucket of each route class, from the `rate_limit_<class>_per_s` / `_burst` settings."""
    return {
        kind: BucketLimit(
            getattr(settings, f"rate_limit_{kind.value}_per_s"), getattr(settings, f"rate_limit_{kind.value}_burst")
        )
        for kind in RouteClass
    }


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int


class TokenBucketLimiter:
    """Takes one token from the (class, principal) bucket in Redis; one script call per request."""

    def __init__(self, redis: Redis, limits: Mapping[RouteClass, BucketLimit]) -> None:
        self._redis = redis
        self._limits = dict(limits)
        self._script = redis.register_script(BUCKET_SCRIPT_LUA)

    async def take(self, kind: RouteClass, principal: str) -> Decision:
        """Refill and take one token; raises Redis's connection/timeout errors when Redis is down."""
        limit = self._limits[kind]
        allowed, wait_ms = await self._script(
            keys=[f"{KEY_PREFIX}:{kind.value}:{principal}"], args=[repr(limit.rate_per_s), limit.burst]
        )
        return Decision(bool(int(allowed)), max(1, math.ceil(int(wait_ms) / 1000)))


def _bearer_token(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" and token.strip() else None
    return None


def principal_key(scope: Scope, verifier: TokenVerifier) -> str:
    """`sub:<subject>` of a token that verifies, else `ip:<client address>`."""
    token = _bearer_token(scope)
    if token is not None:
        try:
            # Remembered on the request: the auth dependency reuses it instead of verifying the signature again.
            return f"sub:{verifier.verify_once(token, scope.setdefault('state', {})).subject}"
        except InvalidToken:
            pass
    client = scope.get("client")
    return f"ip:{client[0] if client else 'unknown'}"


class RateLimitMiddleware:
    """Refuse requests over the principal's bucket with 429; Redis down is a 503 (fail closed)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        service: str,
        verifier: TokenVerifier,
        limiter: Callable[[], TokenBucketLimiter | None],
    ) -> None:
        self.app = app
        self.service = service
        self.verifier = verifier
        self.limiter = limiter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in UNLIMITED_PATHS:
            await self.app(scope, receive, send)
            return
        limiter = self.limiter()
        if limiter is None:  # before the lifespan built Redis: nothing is served yet anyway
            await self.app(scope, receive, send)
            return
        kind = route_class(scope["path"])
        try:
            decision = await limiter.take(kind, principal_key(scope, self.verifier))
        except (RedisConnectionError, RedisTimeoutError) as exc:
            log.warning("rate_limit_backend_unavailable", path=scope["path"], error_type=type(exc).__name__)
            response = error_response(
                503, BACKEND_UNAVAILABLE, "redis is unavailable; retry later", {"backend": "redis"}
            )
            await response(scope, receive, send)
            return
        if decision.allowed:
            await self.app(scope, receive, send)
            return
        rate_limited_total.labels(self.service, kind.value).inc()
        response = error_response(
            429,
            RATE_LIMITED,
            f"too many {kind.value} requests; retry after {decision.retry_after_s} s",
            {"route_class": kind.value, "retry_after_s": decision.retry_after_s},
            headers={"Retry-After": str(decision.retry_after_s)},
        )
        await response(scope, receive, send)
