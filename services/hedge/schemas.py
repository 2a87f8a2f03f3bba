"""Request and response models of the hedge service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.domain.hedge import HedgeLevel, HedgePolicy, HedgePolicyError
from shared.domain.money import (
    BelowOneFraction,
    DecimalString,
    Fraction,
    NonNegativeDecimal,
    PositiveDecimal,
    UnitThreshold,
)
from shared.service_kit import ServiceInfo
from shared.web import Encodable, safe_text

Reason = Annotated[str, safe_text(min_length=3, max_length=500), Encodable]
NonNegative = NonNegativeDecimal
Positive = PositiveDecimal
Band = BelowOneFraction
Threshold = UnitThreshold


class OverrideSet(BaseModel):
    """A fixed target hedge fraction for one account until `expires_at` (must lie in the future)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_fraction: Fraction
    reason: Reason
    expires_at: AwareDatetime


class OverrideClear(BaseModel):
    """Why the override is removed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Reason


class RearmRequest(BaseModel):
    """Re-arm the raised recommendations of an account (one level, or every raised one when `level` is null)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    reason: Reason
    level: HedgeLevel | None = None


class OverrideRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_fraction: DecimalString
    reason: str
    expires_at: datetime
    set_by: str
    set_at: datetime
    active: bool


class PendingOverrideRead(BaseModel):
    """An override waiting for director approval (not effective until approved)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["pending_approval"] = "pending_approval"
    subject_id: str = Field(description="subject_id of the hitl approval request (subject_type hedge_override)")
    target_fraction: DecimalString
    reason: str
    expires_at: datetime
    requested_by: str
    requested_at: datetime


class OverrideHistoryRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: str
    target_fraction: DecimalString | None
    previous_fraction: DecimalString | None
    expires_at: datetime | None
    previous_expires_at: datetime | None
    reason: str
    actor: str
    occurred_at: datetime


class RecommendationRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    recommendation_id: str
    account_id: str
    level: HedgeLevel
    drawdown: DecimalString
    threshold: DecimalString
    raised_at: datetime
    rearmed_at: datetime | None = None
    rearmed_by: str | None = None
    rearm_reason: str | None = None


class HedgeOrderRead(BaseModel):
    model_config = ConfigDict(extra="forbid")

    client_order_id: str
    account_id: str
    target_version: int
    symbol: str
    side: str
    quantity: DecimalString
    from_fraction: DecimalString
    to_fraction: DecimalString
    status: str
    filled_quantity: DecimalString
    created_at: datetime
    settled_at: datetime | None


class HedgeStatus(BaseModel):
    """The computed target with its inputs, the operator override and what the service does about it."""

    model_config = ConfigDict(extra="forbid")

    account_id: str
    hedge_symbol: str
    nav: DecimalString | None
    peak_nav: DecimalString | None
    peak_at: datetime | None
    drawdown: DecimalString
    volatility: DecimalString | None = Field(description="null until the first evaluation: unknown, never calm")
    computed_target: DecimalString | None
    override: OverrideRead | None
    pending_override: PendingOverrideRead | None = Field(
        default=None, description="newest override waiting for approval (the hitl policy's hedge_override rule)"
    )
    effective_target: DecimalString | None
    current_fraction: DecimalString | None
    hedged_quantity: DecimalString = Field(description="base sold by hedge orders, net of buy-backs")
    rebalance_band: DecimalString
    policy_version: int = Field(description="0: the service default policy")
    unpriced_assets: list[str] = Field(description="held assets without a price: NAV and the hedge wait for one")
    target_version: int
    open_order: HedgeOrderRead | None
    active_recommendations: list[RecommendationRead]
    holdings_at: datetime | None
    evaluated_at: datetime | None


class HedgeInfo(ServiceInfo):
    """Service info plus the kill-switch recommendations in force (for the accounts the caller may see)."""

    active_recommendations: list[RecommendationRead]


class PolicyFields(BaseModel):
    """The per-account hedge policy (the EWMA decay and sampling stay service-wide: volatility is per symbol)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    vol_weight: NonNegative
    drawdown_weight: NonNegative
    vol_saturation: Positive
    drawdown_saturation: Positive
    floor: Fraction
    cap: Fraction
    band: Band
    pause_drawdown: Threshold | None
    reduce_only_drawdown: Threshold | None
    flatten_drawdown: Threshold | None
    rearm_hysteresis: NonNegative

    def policy(self, ewma_lambda: Decimal) -> HedgePolicy:
        """The domain policy (raises HedgePolicyError, naming the field of this model, on a contradiction)."""
        self._check_levels_rise()
        thresholds = {
            HedgeLevel.PAUSE: self.pause_drawdown,
            HedgeLevel.REDUCE_ONLY: self.reduce_only_drawdown,
            HedgeLevel.FLATTEN: self.flatten_drawdown,
        }
        return HedgePolicy(
            vol_weight=self.vol_weight,
            drawdown_weight=self.drawdown_weight,
            vol_saturation=self.vol_saturation,
            drawdown_saturation=self.drawdown_saturation,
            floor=self.floor,
            cap=self.cap,
            band=self.band,
            ewma_lambda=ewma_lambda,
            levels=tuple((level, value) for level, value in thresholds.items() if value is not None),
            rearm_hysteresis=self.rearm_hysteresis,
        )

    def _check_levels_rise(self) -> None:
        highest: tuple[str, Decimal] | None = None
        for name in ("pause_drawdown", "reduce_only_drawdown", "flatten_drawdown"):
            value: Decimal | None = getattr(self, name)
            if value is None:
                continue
            if highest is not None and value < highest[1]:
                raise HedgePolicyError(
                    name, f"must be >= {highest[0]} ({highest[1]}): levels rise from pause to reduce_only to flatten"
                )
            if highest is None or value > highest[1]:
                highest = (name, value)


class PolicyWrite(PolicyFields):
    """A new version of the account's policy. Each field's range is in the schema; contradictions between
    fields (cap below floor, levels out of order) are a domain 422 `invalid_policy` naming the field."""

    reason: Reason


class PolicyRead(PolicyFields):
    """The policy in force for an account; version 0 is the service default from the settings."""

    model_config = ConfigDict(extra="forbid")

    account_id: str
    version: int
    reason: str | None
    set_by: str | None
    set_at: datetime | None
