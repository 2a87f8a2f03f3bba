"""Access-token revocation in Redis: one key per revoked `jti`, expiring when the token would have expired anyway."""

from __future__ import annotations

from datetime import UTC, datetime

from redis.asyncio import Redis

from shared.auth.tokens import RevocationCheck

REVOKED_PREFIX = "auth:revoked:"


def revoked_key(jti: str) -> str:
    """The Redis key marking `jti` as revoked."""
    return f"{REVOKED_PREFIX}{jti}"


async def revoke_jti(redis: Redis, jti: str, expires_at: datetime) -> None:
    """Mark `jti` revoked until `expires_at` (plus a minute for verifier leeway)."""
    ttl_s = max(1, int((expires_at - datetime.now(UTC)).total_seconds()) + 60)
    await redis.set(revoked_key(jti), b"1", ex=ttl_s)


def redis_revocation_check(redis: Redis) -> RevocationCheck:
    """The `TokenVerifier.with_revocation` hook: a Redis error propagates, so the verifier fails closed (503)."""

    async def is_revoked(jti: str) -> bool:
        return bool(await redis.exists(revoked_key(jti)))

    return is_revoked
