"""Request and response models of the exit brackets (decimal strings, extra fields refused)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

from shared.domain.bracket_model import Bracket, BracketStatus, ExitPolicy
from shared.domain.money import DecimalString, OpenPercent, Percent, PositiveDecimal, ProfitPercent
from shared.web import JsonInteger, Reason

# A long's stop sits below the entry: strictly between 0 and 100 % off it.
BelowEntryPercent = OpenPercent
Price = PositiveDecimal


# What `_consistent` enforces, in the schema: a trailing activation needs a trailing distance, and a policy needs a
# stop-loss or a trailing stop (`properties` alone: the field is absent, so its default applies, or a string).
_CONSISTENT_SCHEMA: dict[str, Any] = {
    "allOf": [
        {
            "anyOf": [
                {"properties": {"trailing_activation_pct": {"type": "null"}}, "required": ["trailing_activation_pct"]},
                {"properties": {"trailing_distance_pct": {"type": "string"}}},
            ]
        },
        {
            "anyOf": [
                {"properties": {"stop_loss_pct": {"type": "string"}}},
                {"properties": {"trailing_distance_pct": {"type": "string"}}},
            ]
        },
    ]
}


class ExitPolicyWrite(BaseModel):
    """An account's default exits in percent of the entry price (null = that leg is not added by default)."""

    model_config = ConfigDict(extra="forbid", frozen=True, json_schema_extra=_CONSISTENT_SCHEMA)

    stop_loss_pct: BelowEntryPercent | None = Decimal(2)
    take_profit_pct: ProfitPercent | None = Decimal(4)
    trailing_distance_pct: BelowEntryPercent | None = Decimal("1.5")
    trailing_activation_pct: Percent | None = Decimal(1)
    time_limit_s: Annotated[int, Field(gt=0, le=366 * 24 * 3600), JsonInteger] | None = None
    swap_band_pct: Percent = Decimal("0.5")
    require_explicit_exits: StrictBool = False

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        # Single-field limits are Field constraints (the 422 names the field); cross-field ones say which field.
        if self.trailing_activation_pct is not None and self.trailing_distance_pct is None:
            raise ValueError("trailing_activation_pct: needs trailing_distance_pct")
        if self.stop_loss_pct is None and self.trailing_distance_pct is None:
            raise ValueError("stop_loss_pct: a policy needs a stop-loss or a trailing stop")
        return self

    def to_policy(self) -> ExitPolicy:
        # Attributes, not model_dump(): the decimal types dump as strings.
        return ExitPolicy(**{name: getattr(self, name) for name in ExitPolicyWrite.model_fields})


class ExitPolicyRead(ExitPolicyWrite):
    model_config = ConfigDict(extra="forbid")

    account_id: str
    version: int = Field(description="0 while the account uses the built-in defaults")
    updated_by: str
    updated_at: datetime | None


class StopMove(BaseModel):
    """Move a bracket's stop-loss (lowering it, unfavourable for a long, needs `allow_unfavourable` and role risk)
    and/or re-arm a failed bracket (`rearm: true`)."""

    # The schema says what `_something_to_do` enforces: a stop_loss, or rearm true.
    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        json_schema_extra={
            "anyOf": [
                {"properties": {"stop_loss": {"type": "string"}}, "required": ["stop_loss"]},
                {"properties": {"rearm": {"const": True}}, "required": ["rearm"]},
            ]
        },
    )

    stop_loss: Price | None = None
    allow_unfavourable: StrictBool = False
    rearm: StrictBool = False
    reason: Reason | None = None

    @model_validator(mode="after")
    def _something_to_do(self) -> Self:
        if self.stop_loss is None and not self.rearm:
            raise ValueError("stop_loss: give a stop_loss, or rearm: true")
        return self


class LegRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str
    price: DecimalString | None = Field(description="trigger or limit price; for the trailing stop its current stop")
    state: str = Field(description="watching (local trigger), resting (limit order at the venue), inactive, done")
    distance: DecimalString | None = None
    activation_price: DecimalString | None = None
    expires_at: datetime | None = None


class ExitOrderRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_order_id: str
    leg: str
    quantity: DecimalString
    limit_price: DecimalString | None
    status: str
    filled_quantity: DecimalString


class BracketRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    bracket_id: str
    account_id: str
    symbol: str
    entry_order_id: str
    status: BracketStatus
    entry_quantity: DecimalString
    entry_price: DecimalString
    open_quantity: DecimalString
    exited_quantity: DecimalString
    stop_loss: DecimalString | None
    take_profit: DecimalString | None
    trailing_stop: DecimalString | None
    effective_stop: DecimalString | None
    last_price: DecimalString | None
    from_policy: bool
    exit_leg: str | None
    legs: list[LegRead]
    exit_orders: list[ExitOrderRead] = Field(default_factory=list)
    version: int
    opened_at: datetime

    @classmethod
    def of(cls, b: Bracket, orders: list[ExitOrderRead] | None = None) -> BracketRead:
        return cls(
            bracket_id=b.bracket_id,
            account_id=b.account_id,
            symbol=b.symbol,
            entry_order_id=b.entry_order_id,
            status=b.status,
            entry_quantity=b.entry_quantity,
            entry_price=b.entry_price,
            open_quantity=b.open_quantity,
            exited_quantity=b.exited_quantity,
            stop_loss=b.levels.stop_loss,
            take_profit=b.levels.take_profit,
            trailing_stop=b.trailing_stop,
            effective_stop=b.effective_stop,
            last_price=b.last_price,
            from_policy=b.from_policy,
            exit_leg=None if b.exit_leg is None else b.exit_leg.value,
            legs=legs_of(b),
            exit_orders=orders or [],
            version=b.version,
            opened_at=b.opened_at,
        )


def legs_of(b: Bracket) -> list[LegRead]:
    """The legs as an operator reads them: which rests at the venue, which are watched locally."""
    done = not b.is_open
    local = "done" if done else "watching"
    legs: list[LegRead] = []
    if b.levels.stop_loss is not None:
        legs.append(LegRead(kind="stop_loss", price=b.levels.stop_loss, state=local))
    if b.levels.take_profit is not None:
        resting = b.working is not None and b.working.leg.value == "take_profit" and b.working.limit_price is not None
        legs.append(LegRead(kind="take_profit", price=b.levels.take_profit, state="resting" if resting else local))
    if b.levels.trailing_distance is not None:
        legs.append(
            LegRead(
                kind="trailing",
                price=b.trailing_stop,
                state=local if b.trailing_high is not None or done else "inactive",
                distance=b.levels.trailing_distance,
                activation_price=b.levels.trailing_activation,
            )
        )
    if b.expires_at is not None:
        legs.append(LegRead(kind="time_limit", price=None, state=local, expires_at=b.expires_at))
    return legs
