"""Request and response models of the hedge service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from shared.domain.hedge import HedgeLevel
from shared.domain.money import DecimalString
from shared.service_kit import ServiceInfo

Reason = Annotated[str, Field(min_length=3, max_length=500)]


def _fraction(value: Decimal) -> Decimal:
    if not Decimal(0) <= value <= Decimal(1):
        raise ValueError("must be between 0 and 1")
    return value


Fraction = Annotated[DecimalString, AfterValidator(_fraction)]


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
    volatility: DecimalString
    computed_target: DecimalString | None
    override: OverrideRead | None
    effective_target: DecimalString | None
    current_fraction: DecimalString | None
    hedged_quantity: DecimalString = Field(description="base sold by hedge orders, net of buy-backs")
    rebalance_band: DecimalString
    target_version: int
    open_order: HedgeOrderRead | None
    active_recommendations: list[RecommendationRead]
    holdings_at: datetime | None
    evaluated_at: datetime | None


class HedgeInfo(ServiceInfo):
    """Service info plus the kill-switch recommendations in force (for the accounts the caller may see)."""

    active_recommendations: list[RecommendationRead]
