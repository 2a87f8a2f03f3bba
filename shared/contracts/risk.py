"""The risk service's messages: trading-state changes (`risk.trading-state-events.v1`), and the pre-trade limits
and exit policy values its controls records carry to the OMS (`shared/contracts/controls.py`). An unknown state
name is a violation, never ACTIVE; decimals travel as strings.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from shared.contracts.base import Contract, Identifier, Message, NonNegativeDecimal, PositiveDecimal, Text, Timestamp
from shared.contracts.orders import SymbolText
from shared.domain.risk_limits import RiskLimits, limits_from_json
from shared.domain.types import TradingState

__all__ = [
    "ExitPolicyValue",
    "RiskLimitsValue",
    "ScopedState",
    "TradingScope",
    "TradingState",
    "TradingStateChanged",
]


class TradingScope(StrEnum):
    """What a trading state applies to."""

    GLOBAL = "global"
    ACCOUNT = "account"


class ScopedState(Message):
    """A trading state of one scope: `account_id` with scope `account` only."""

    scope: TradingScope
    account_id: Identifier | None
    state: TradingState

    @model_validator(mode="after")
    def _account_matches_scope(self) -> Self:
        if (self.scope is TradingScope.ACCOUNT) != (self.account_id is not None):
            raise ValueError("account_id is required for scope 'account' and refused for scope 'global'")
        return self


class TradingStateChanged(ScopedState):
    """A scope's trading state changed (aggregate and key: `global` or `account:<id>`)."""

    TYPE = "TradingStateChanged"

    previous: TradingState
    reason: Text
    actor: Annotated[str, Field(min_length=1, max_length=256)]
    version: Annotated[int, Field(ge=1)]
    changed_at: Timestamp


class RiskLimitsValue(Contract):
    """An account's pre-trade limits (`limits_to_json`; carried by `RiskLimitsSet`); absent fields mean no limit."""

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


class ExitPolicyValue(Contract):
    """An account's exit policy version (percentages of the entry price; carried by `ExitPolicySet`)."""

    version: Annotated[int, Field(ge=1)]
    stop_loss_pct: PositiveDecimal | None
    take_profit_pct: PositiveDecimal | None
    trailing_distance_pct: PositiveDecimal | None
    trailing_activation_pct: NonNegativeDecimal | None
    time_limit_s: Annotated[int, Field(gt=0)] | None
    swap_band_pct: NonNegativeDecimal
    require_explicit_exits: bool
