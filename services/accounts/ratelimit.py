"""Credential failure counters in Redis; over a limit the caller gets 429 with Retry-After.

Three counters per failed attempt, each over `window_s`:
- per (name, client): `max_per_name` failures lock that name *from that client* only, so strangers guessing a
  password elsewhere never lock the real user out;
- per client: `max_per_client` failures over any names lock the client (password spraying);
- per name, over every client: past `name_slowdown_after` failures, a client that has already failed on the name
  is refused at once, while a clean client (no failure on that name) may still try. A distributed guesser gets
  about one guess per address, the real user logs in from a clean address.
`scope` keeps user logins and service-identity credentials apart; the per-client counter is shared by both.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis.asyncio import Redis

from services.accounts.errors import TooManyAttempts

PREFIX = "accounts:credential-failures:"


def _key(kind: str, *parts: str) -> str:
    # Hashed: names typed by strangers never appear as Redis key names.
    digest = hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:32]
    return f"{PREFIX}{kind}:{digest}"


@dataclass(frozen=True)
class LoginLimiter:
    redis: Redis
    max_per_name: int
    max_per_client: int
    name_slowdown_after: int
    window_s: int

    def _pair(self, scope: str, name: str, client: str) -> str:
        return _key("pair", scope, name.lower(), client)

    def _name(self, scope: str, name: str) -> str:
        return _key("name", scope, name.lower())

    def _client(self, client: str) -> str:
        return _key("client", client)

    async def _refuse(self, key: str) -> None:
        ttl = await self.redis.ttl(key)
        raise TooManyAttempts(max(1, int(ttl)))

    async def check(self, name: str, client: str, scope: str = "user") -> None:
        """Raise TooManyAttempts (with Retry-After seconds) when this client may not try this name now."""
        pair, per_name, per_client = self._pair(scope, name, client), self._name(scope, name), self._client(client)
        raw = await self.redis.mget([pair, per_name, per_client])
        pair_count, name_count, client_count = (int(value) if value is not None else 0 for value in raw)
        if client_count >= self.max_per_client:
            await self._refuse(per_client)
        if pair_count >= self.max_per_name:
            await self._refuse(pair)
        if name_count >= self.name_slowdown_after and pair_count > 0:
            await self._refuse(per_name)

    async def check_client(self, client: str) -> None:
        """Raise TooManyAttempts when the client alone is over its limit (refresh tokens carry no name)."""
        count = await self.redis.get(self._client(client))
        if count is not None and int(count) >= self.max_per_client:
            await self._refuse(self._client(client))

    async def record_failure(self, name: str, client: str, scope: str = "user") -> None:
        """Count one failed attempt (wrong password, unknown name, wrong or replayed TOTP code)."""
        await self._count([self._pair(scope, name, client), self._name(scope, name), self._client(client)])

    async def record_client_failure(self, client: str) -> None:
        """Count one failure against the client only."""
        await self._count([self._client(client)])

    async def _count(self, keys: list[str]) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in keys:
                pipe.incr(key)
                pipe.expire(key, self.window_s, nx=True)
            await pipe.execute()

    async def reset(self, name: str, client: str, scope: str = "user") -> None:
        """A success clears this client's counter for the name (the per-name and per-client ones count down)."""
        await self.redis.delete(self._pair(scope, name, client))
