"""Pre-trade limits as the risk service mirrors them in Redis (source of truth: `risk.limits`), read through the
`RiskLimitsValue` and `ExitPolicyValue` contracts."""

from __future__ import annotations

from dataclasses import replace

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.oms.errors import RiskStateUnavailable
from shared.contracts.base import ContractViolation
from shared.contracts.mirror import decode_mirror
from shared.contracts.risk import ExitPolicyValue, RiskLimitsValue
from shared.domain.risk_limits import RiskLimits
from shared.mirror_keys import exit_policy_key, risk_limits_key


class RiskLimitsReader:
    """An account's current limits; no key means no limits configured. Redis unreachable or a value that breaks
    its contract is an error (503), never "no limits". Explicit exits are required when the limits or the
    account's exit policy (`risk:exit_policy:account:<id>`) say so."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, account_id: str) -> RiskLimits | None:
        """The account's limits (with the exit policy's `require_explicit_exits`), None when none are set."""
        try:
            raw, policy_raw = await self.redis.mget([risk_limits_key(account_id), exit_policy_key(account_id)])
        except RedisError as exc:
            raise RiskStateUnavailable(f"risk limits unavailable: {type(exc).__name__}") from None
        try:
            limits = None if raw is None else decode_mirror(RiskLimitsValue, raw).to_domain()
            policy = None if policy_raw is None else decode_mirror(ExitPolicyValue, policy_raw)
        except ContractViolation as exc:
            raise RiskStateUnavailable(f"risk limits of {account_id} are unreadable: {exc.reason}") from None
        if policy is not None and policy.require_explicit_exits:
            return replace(limits or RiskLimits(), require_explicit_exits=True)
        return limits
