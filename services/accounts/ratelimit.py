"""Login failure counters in Redis, per username and per client IP; over the limit the caller gets 429."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from services.accounts.errors import TooManyAttempts

PREFIX = "accounts:login-failures:"


def _key(kind: str, value: str) -> str:
    # Hashed: usernames typed by strangers never appear as Redis key names.
    return f"{PREFIX}{kind}:{hashlib.sha256(value.encode()).hexdigest()[:32]}"


@dataclass(frozen=True)
class LoginLimiter:
    redis: Redis
    max_per_user: int
    max_per_ip: int
    window_s: int

    def _keys(self, username: str, client_ip: str) -> list[tuple[str, int]]:
        return [(_key("user", username.lower()), self.max_per_user), (_key("ip", client_ip), self.max_per_ip)]

    async def check(self, username: str, client_ip: str) -> None:
        """Raise TooManyAttempts (with Retry-After seconds) when either counter is at its limit."""
        for key, limit in self._keys(username, client_ip):
            count = await self.redis.get(key)
            if count is not None and int(count) >= limit:
                ttl = await self.redis.ttl(key)
                raise TooManyAttempts(max(1, int(ttl)))

    async def record_failure(self, username: str, client_ip: str) -> None:
        """Count one failed attempt (wrong password, unknown user or wrong TOTP code)."""
        async with self.redis.pipeline(transaction=True) as pipe:
            for key, _ in self._keys(username, client_ip):
                pipe.incr(key)
                pipe.expire(key, self.window_s, nx=True)
            await pipe.execute()

    async def reset_user(self, username: str) -> None:
        """A successful login clears the per-username counter (the per-IP one keeps counting down)."""
        await self.redis.delete(_key("user", username.lower()))
