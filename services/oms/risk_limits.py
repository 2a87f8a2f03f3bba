"""Pre-trade limits as the risk service mirrors them in Redis (source of truth: `risk.limits`), and the exposure
figures the OMS computes from its own tables to check them."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime, time
from decimal import Decimal, InvalidOperation

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.oms.errors import RiskStateUnavailable
from shared.domain.risk_limits import RiskLimits, limits_from_json
from shared.mirror_keys import exit_policy_key, risk_limits_key


def start_of_utc_day(now: datetime) -> datetime:
    """00:00 UTC of `now`'s UTC day: the daily loss limit counts fills from there."""
    return datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)


class RiskLimitsReader:
    """An account's current limits; no key means no limits configured. Redis unreachable or an unreadable value
    is an error (503), never "no limits". Explicit exits are required when the limits or the account's exit
    policy (`risk:exit_policy:account:<id>`) say so."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, account_id: str) -> RiskLimits | None:
        try:
            raw, policy_raw = await self.redis.mget([risk_limits_key(account_id), exit_policy_key(account_id)])
        except RedisError as exc:
            raise RiskStateUnavailable(f"risk limits unavailable: {type(exc).__name__}") from None
        try:
            limits = None if raw is None else limits_from_json(json.loads(raw))
            exits_by_policy = policy_raw is not None and json.loads(policy_raw).get("require_explicit_exits") is True
        except (ValueError, TypeError, InvalidOperation, AttributeError):
            raise RiskStateUnavailable(f"risk limits of {account_id} are unreadable") from None
        if exits_by_policy:
            return replace(limits or RiskLimits(), require_explicit_exits=True)
        return limits


def mid_price(book_raw: bytes | str | None) -> Decimal | None:
    """Mid of the latest book (the paper feed's `book_json`): (best bid + best ask) / 2, one side alone if needed."""
    if book_raw is None:
        return None
    book = json.loads(book_raw)
    bests = [Decimal(side[0]["price"]) for side in (book.get("bids") or [], book.get("asks") or []) if side]
    if not bests:
        return None
    return sum(bests, Decimal(0)) / len(bests)
