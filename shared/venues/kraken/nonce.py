"""Nonces for one API key, increasing across processes and replicas: a Redis counter on a microsecond base.

Kraken refuses a nonce not greater than the last one it saw for the key (`EAPI:Invalid nonce`). Every signer of a
key takes its nonce from one Redis key with a Lua script that returns max(now_us, last + 1) and stores it: atomic
in Redis, so two replicas never get the same or a smaller value, and a restart never goes back in time.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.venues.base import TemporaryError

_NEXT_NONCE = """
local now = tonumber(ARGV[1])
local last = tonumber(redis.call('GET', KEYS[1]) or '0')
local nonce = now
if last >= now then nonce = last + 1 end
redis.call('SET', KEYS[1], nonce)
return nonce
"""


def nonce_key(api_key: str) -> str:
    """The Redis key of one API key's last nonce (the public key names it; never the secret)."""
    return f"aether:kraken:nonce:{api_key}"


class RedisNonces:
    """Hands out strictly increasing nonces per API key, shared through Redis."""

    def __init__(self, redis: Redis, clock_us: Callable[[], int] = lambda: time.time_ns() // 1000) -> None:
        self._redis = redis
        self._clock_us = clock_us
        self._script = redis.register_script(_NEXT_NONCE)

    async def next(self, api_key: str) -> int:
        """The next nonce of `api_key`; `TemporaryError` (nothing was sent) when Redis is unreachable."""
        try:
            value = await self._script(keys=[nonce_key(api_key)], args=[self._clock_us()])
        except RedisError as exc:
            raise TemporaryError(f"nonce counter unavailable: {type(exc).__name__}") from exc
        return int(value)
