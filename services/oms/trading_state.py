"""Trading state as the risk service publishes it in Redis (the source of truth stays in the risk schema)."""

from __future__ import annotations

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.oms.errors import RiskStateUnavailable
from shared.contracts.base import ContractViolation
from shared.contracts.mirror import decode_mirror
from shared.contracts.risk import TradingStateValue
from shared.domain.trading_state import effective_state
from shared.domain.types import TradingState
from shared.mirror_keys import GLOBAL_TRADING_STATE_KEY, trading_state_key


class TradingStateReader:
    """The stricter of the global and the account's state. No state published yet means ACTIVE; Redis being
    unreachable or a value that breaks `TradingStateValue` is an error (503), never a guess."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, account_id: str) -> TradingState:
        """The account's effective trading state."""
        try:
            values = await self.redis.mget([GLOBAL_TRADING_STATE_KEY, trading_state_key(account_id)])
        except RedisError as exc:
            raise RiskStateUnavailable(f"trading state unavailable: {type(exc).__name__}") from None
        try:
            states = [decode_mirror(TradingStateValue, value).state for value in values if value is not None]
        except ContractViolation as exc:
            raise RiskStateUnavailable(f"trading state of {account_id} is unreadable: {exc.reason}") from None
        return effective_state(states)
