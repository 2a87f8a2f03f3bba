"""The risk service's messages and mirror values: trading-state changes (`risk.trading-state-events.v1`), and
the trading state, pre-trade limits and exit policy it mirrors to Redis for the OMS's fast path.

Trading state is mirrored as the bare state name (`active`, `reducing`, `halted`); an unknown name is a
violation, never ACTIVE. The limits and exit policy are JSON with decimal strings and sorted keys.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from shared.contracts.base import Identifier, Message, MirrorValue, NonNegativeDecimal, PositiveDecimal, Text, Timestamp
from shared.contracts.orders import SymbolText
from shared.domain.risk_limits import RiskLimits, limits_from_json
from shared.domain.types import TradingState

__all__ = [
    "ExitPolicyValue",
    "RiskLimitsValue",
    "TradingScope",
    "TradingState",
    "TradingStateChanged",
    "TradingStateValue",
]


class TradingScope(StrEnum):
    """What a trading state applies to."""

    GLOBAL = "global"
    ACCOUNT = "account"


class TradingStateChanged(Message):
    """A scope's trading state changed (aggregate and key: `global` or `account:<id>`)."""

    TYPE = "TradingStateChanged"

    scope: TradingScope
    account_id: Identifier | None
    state: TradingState
    previous: TradingState
    reason: Text
    actor: Annotated[str, Field(min_length=1, max_length=256)]
    version: Annotated[int, Field(ge=1)]
    changed_at: Timestamp

    @model_validator(mode="after")
    def _account_matches_scope(self) -> Self:
        if (self.scope is TradingScope.ACCOUNT) != (self.account_id is not None):
            raise ValueError("account_id is required for scope 'account' and refused for scope 'global'")
        return self


class TradingStateValue(MirrorValue):
    """`risk:trading_state:global` / `risk:trading_state:account:<id>`: the bare state name."""

    state: TradingState

    def to_mirror(self) -> str:
        """The state name alone, as the risk service has always written it."""
        return self.state.value

    @classmethod
    def parse_mirror(cls, raw: str) -> Self:
        """Parse a state name; pydantic's ValidationError for anything else."""
        return cls.model_validate({"state": raw})


class RiskLimitsValue(MirrorValue):
    """`risk:limits:account:<id>`: an account's pre-trade limits (`limits_to_json`); absent fields mean no limit."""

    max_order_notional: PositiveDecimal | None = None
    max_position_notional: PositiveDecimal | None = None
    max_position_notional_by_symbol: dict[SymbolText, PositiveDecimal] = Field(default_factory=dict)
    max_open_orders: Annotated[int, Field(ge=0)] | None = None
    daily_loss_limit: PositiveDecimal | None = None
    price_collar_pct: PositiveDecimal | None = None
    allowed_symbols: list[SymbolText] | None = None
    require_explicit_exits: bool = False

    def to_domain(self) -> RiskLimits:
        """The domain limits."""
        return limits_from_json(self.model_dump(mode="json"))


class ExitPolicyValue(MirrorValue):
    """`risk:exit_policy:account:<id>`: an account's exit policy version (percentages of the entry price)."""

    version: Annotated[int, Field(ge=1)]
    stop_loss_pct: PositiveDecimal | None
    take_profit_pct: PositiveDecimal | None
    trailing_distance_pct: PositiveDecimal | None
    trailing_activation_pct: NonNegativeDecimal | None
    time_limit_s: Annotated[int, Field(gt=0)] | None
    swap_band_pct: NonNegativeDecimal
    require_explicit_exits: bool
