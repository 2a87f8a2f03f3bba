"""Trading state as the risk service publishes it in Redis (the source of truth stays in the risk schema)."""

from __future__ import annotations

from decimal import Decimal

from redis.asyncio import Redis
from redis.exceptions import RedisError

from services.oms.errors import RiskStateUnavailable
from shared.domain.orders import Order
from shared.domain.types import OrderSide, TradingState
from shared.mirror_keys import GLOBAL_TRADING_STATE_KEY, trading_state_key

_SEVERITY = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}


class TradingStateReader:
    """The stricter of the global and the account's state. No state published yet means ACTIVE;
    Redis being unreachable is an error (the request fails with 503), never a guess."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def get(self, account_id: str) -> TradingState:
        try:
            values = await self.redis.mget([GLOBAL_TRADING_STATE_KEY, trading_state_key(account_id)])
        except RedisError as exc:
            raise RiskStateUnavailable(f"trading state unavailable: {type(exc).__name__}") from None
        states = [TradingState(value.decode() if isinstance(value, bytes) else value) for value in values if value]
        return max(states, key=_SEVERITY.__getitem__, default=TradingState.ACTIVE)


def denial_for_state(state: TradingState, order: Order, position_quantity: Decimal) -> tuple[str, str] | None:
    """(code, sentence) when the trading state forbids this new order; cancels are never checked here."""
    if state is TradingState.HALTED:
        return "trading_halted", "trading is halted: new orders are denied (cancels still pass)"
    if state is TradingState.REDUCING and not (order.side is OrderSide.SELL and order.quantity <= position_quantity):
        return "trading_reducing", "trading is reduce-only: only sells of a held position are allowed"
    return None
