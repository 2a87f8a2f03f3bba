"""Request and response models of the risk service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from shared.domain.money import OpenPercent, PositiveDecimal
from shared.domain.types import TradingState
from shared.web import SYMBOL_KEYS_SCHEMA, Identifier, JsonInteger, Reason, SymbolText

Scope = Literal["global", "account"]


class LimitValues(BaseModel):
    """An account's pre-trade limits; null (or absent) means no limit for that dimension."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_order_notional: PositiveDecimal | None = Field(default=None, description="quote notional of one order")
    max_position_notional: PositiveDecimal | None = Field(
        default=None, description="default cap of held + open-buy notional per instrument"
    )
    max_position_notional_by_symbol: dict[SymbolText, PositiveDecimal] = Field(
        default_factory=dict,
        description="per-instrument overrides of max_position_notional",
        json_schema_extra=SYMBOL_KEYS_SCHEMA,
    )
    max_open_orders: Annotated[int, Field(ge=0, le=100_000), JsonInteger] | None = None
    daily_loss_limit: PositiveDecimal | None = Field(default=None, description="realized loss since 00:00 UTC")
    price_collar_pct: OpenPercent | None = Field(default=None, description="max % a limit price may be from mid")
    allowed_symbols: list[SymbolText] | None = Field(default=None, max_length=500, description="null: every symbol")
    require_explicit_exits: StrictBool = False


class LimitsUpdate(LimitValues):
    """A new version of an account's limits (replaces every value) and why."""

    reason: Reason


class LimitsRead(LimitValues):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    version: int = Field(description="0 when no limits were ever set (no limits apply)")
    actor: str | None
    reason: str | None
    created_at: datetime | None


class TradingStateCommand(BaseModel):
    """Kill switch, safe mode or resume of one scope, with the reason (required)."""

    # The schema says what the validator below enforces: account_id with scope "account" only.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "oneOf": [
                {"properties": {"scope": {"const": "global"}, "account_id": {"type": "null"}}},
                {
                    "properties": {"scope": {"const": "account"}, "account_id": {"type": "string"}},
                    "required": ["account_id"],
                },
            ]
        },
    )

    scope: Scope
    account_id: Identifier | None = None
    reason: Reason

    @model_validator(mode="after")
    def _account_matches_scope(self) -> Self:
        if self.scope == "account" and self.account_id is None:
            raise ValueError("account_id is required when scope is 'account'")
        if self.scope == "global" and self.account_id is not None:
            raise ValueError("account_id must be absent when scope is 'global'")
        return self


class TradingStateRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scope: Scope
    account_id: str | None
    state: TradingState
    version: int = Field(description="0: never changed (ACTIVE)")
    reason: str | None
    actor: str | None
    changed_at: datetime | None


class TradingStateChange(TradingStateRead):
    previous: TradingState
    changed: bool = Field(description="false when the scope was already in the requested state")


class TradingStateOverview(BaseModel):
    model_config = ConfigDict(extra="forbid")

    global_state: TradingStateRead = Field(alias="global")
    accounts: list[TradingStateRead]


class ApprovalPending(BaseModel):
    """A change the account's approval policy holds for a director (the hitl request's subject and hash)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pending_approval"] = "pending_approval"
    subject_id: str = Field(description="the approval request's subject id (GET /hitl/requests shows it)")
    payload_hash: str = Field(description="SHA-256 of the payload the directors approve")
