"""Kraken's rate counters, kept in Redis so that every replica using one API key counts against the same limit.

Two decaying counters (docs.kraken.com/api/docs/guides/spot-rest-ratelimits and .../spot-ratelimits):
- the REST call counter per API key: +1 per call (+2 for TradesHistory / Ledgers; AddOrder and CancelOrder are
  not counted there), decaying by the tier's rate, at most the tier's maximum;
- the trading counter per API key and pair: +1 per AddOrder, and on CancelOrder a penalty by the order's age
  (younger orders cost more), decaying by the tier's rate up to the tier's threshold.

A counter is the pair (value, time) in a Redis hash; one Lua script decays it to Redis' own clock, and either adds
the cost (granted) or answers how long to wait until it fits. Callers wait BEFORE sending, so a request the
counter holds back never reaches the venue.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

from redis.asyncio import Redis
from redis.exceptions import RedisError

from shared.venues.base import TemporaryError


class Tier(StrEnum):
    STARTER = "starter"
    INTERMEDIATE = "intermediate"
    PRO = "pro"


@dataclass(frozen=True, slots=True)
class CounterLimit:
    maximum: Decimal
    decay_per_s: Decimal


# REST call counter: Starter 15 at -0.33/s, Intermediate 20 at -0.5/s, Pro 20 at -1/s.
REST_LIMITS: dict[Tier, CounterLimit] = {
    Tier.STARTER: CounterLimit(Decimal(15), Decimal("0.33")),
    Tier.INTERMEDIATE: CounterLimit(Decimal(20), Decimal("0.5")),
    Tier.PRO: CounterLimit(Decimal(20), Decimal(1)),
}
# Trading counter per pair: threshold 60 / 125 / 180, decay 1 / 2.34 / 3.75 per second.
TRADING_LIMITS: dict[Tier, CounterLimit] = {
    Tier.STARTER: CounterLimit(Decimal(60), Decimal(1)),
    Tier.INTERMEDIATE: CounterLimit(Decimal(125), Decimal("2.34")),
    Tier.PRO: CounterLimit(Decimal(180), Decimal("3.75")),
}
# REST calls that cost 2 on the call counter; AddOrder / CancelOrder cost nothing there (trading counter).
REST_COST: dict[str, int] = {"TradesHistory": 2, "Ledgers": 2, "QueryLedgers": 2, "AddOrder": 0, "CancelOrder": 0}
ADD_ORDER_COST = 1
# Cancel penalty by the order's age in seconds: (age below, points); 0 from 300 s on.
CANCEL_PENALTY: tuple[tuple[int, int], ...] = ((5, 8), (10, 6), (15, 5), (45, 4), (90, 2), (300, 1))


def rest_cost(method: str) -> int:
    """What one call of `method` adds to the REST call counter."""
    return REST_COST.get(method, 1)


def cancel_penalty(age_s: float) -> int:
    """What cancelling an order `age_s` seconds old adds to the pair's trading counter."""
    for below, points in CANCEL_PENALTY:
        if age_s < below:
            return points
    return 0


_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local cost = tonumber(ARGV[1])
local maximum = tonumber(ARGV[2])
local decay = tonumber(ARGV[3])
local value = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local at = tonumber(redis.call('HGET', KEYS[1], 't') or tostring(now))
value = math.max(0, value - (now - at) * decay)
if value + cost > maximum and cost > 0 then
  redis.call('HSET', KEYS[1], 'v', tostring(value), 't', tostring(now))
  return tostring((value + cost - maximum) / decay)
end
value = value + cost
redis.call('HSET', KEYS[1], 'v', tostring(value), 't', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(maximum / decay) + 60)
return '0'
"""


class RateCounters:
    """The REST and trading counters of Kraken API keys, in Redis."""

    def __init__(self, redis: Redis, tier: Tier, *, max_wait_s: float = 30.0) -> None:
        self._script = redis.register_script(_ACQUIRE)
        self.tier = tier
        self.max_wait_s = max_wait_s

    async def try_acquire(self, key: str, cost: int, limit: CounterLimit) -> float:
        """Add `cost` when it fits (answers 0) or answer the seconds to wait until it would."""
        try:
            wait = await self._script(keys=[key], args=[cost, str(limit.maximum), str(limit.decay_per_s)])
        except RedisError as exc:
            raise TemporaryError(f"rate counter unavailable: {type(exc).__name__}") from exc
        return float(wait)

    async def acquire(self, key: str, cost: int, limit: CounterLimit) -> None:
        """Wait until `cost` fits under the counter, then add it; `TemporaryError` past `max_wait_s`."""
        waited = 0.0
        while (wait := await self.try_acquire(key, cost, limit)) > 0:
            if waited + wait > self.max_wait_s:
                raise TemporaryError(f"rate limit: would wait {waited + wait:.1f}s (max {self.max_wait_s}s)")
            await asyncio.sleep(wait)
            waited += wait

    async def trading(self, api_key: str, pair: str, cost: int) -> None:
        """Count `cost` on `pair`'s trading counter for `api_key` (waits for room)."""
        if cost:
            await self.acquire(f"aether:kraken:trade:{api_key}:{pair}", cost, TRADING_LIMITS[self.tier])
