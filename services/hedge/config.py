"""Settings of the hedge service (AETHER_ prefix; decimals as strings in the environment)."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import Literal, Self

from pydantic import Field, model_validator

from shared.auth.service_tokens import ServiceIdentitySettings
from shared.config import AetherSettings, env_name, load_settings
from shared.domain.hedge import HedgeLevel, HedgePolicy, HedgePolicyError
from shared.events.topics import (
    ANALYTICS_FEATURE_EVENTS,
    HEDGE_RECOMMENDATION_EVENTS,
    HEDGE_TARGET_EVENTS,
    HITL_DECISIONS,
    OMS_BALANCE_EVENTS,
    OMS_COMMANDS,
    OMS_ORDER_EVENTS,
)
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC

# Domain policy field -> setting name, so a contradiction is reported under the name the operator set.
_POLICY_SETTING = {
    "floor": "target_floor",
    "cap": "target_cap",
    "band": "rebalance_band",
    "levels": "pause_drawdown",
    "levels.pause": "pause_drawdown",
    "levels.reduce_only": "reduce_only_drawdown",
    "levels.flatten": "flatten_drawdown",
}


class HedgeSettings(AetherSettings, ServiceIdentitySettings):
    service_name: str = "hedge"

    vol_weight: Decimal = Field(default=Decimal("0.5"), ge=0, description="weight of the volatility score")
    drawdown_weight: Decimal = Field(default=Decimal("0.5"), ge=0, description="weight of the drawdown score")
    vol_saturation: Decimal = Field(default=Decimal("0.02"), gt=0, description="per-sample volatility scoring 1")
    drawdown_saturation: Decimal = Field(default=Decimal("0.20"), gt=0, description="drawdown scoring 1")
    target_floor: Decimal = Field(default=Decimal(0), ge=0, le=1)
    target_cap: Decimal = Field(default=Decimal("0.8"), ge=0, le=1)
    rebalance_band: Decimal = Field(default=Decimal("0.05"), ge=0, lt=1)
    ewma_lambda: Decimal = Field(default=Decimal("0.94"), gt=0, lt=1)
    vol_sample_interval_s: float = Field(default=60.0, ge=0, description="minimum spacing of volatility samples")
    volatility_source: Literal["ewma", "features"] = Field(
        default="features",
        description="features (default): the realized volatility the analytics service publishes on"
        " analytics.feature-events.v1 (docs/features.md), per 1-minute bar; no feature yet, no decision."
        " ewma: the hedge's own EWMA of price returns (tests, deployments without the analytics service)",
    )
    volatility_feature: Literal["rv_5", "rv_15", "rv_60"] = Field(
        default="rv_60", description="with volatility_source=features: which realized volatility (bars summed)"
    )
    pause_drawdown: Decimal | None = Field(default=Decimal("0.05"), gt=0, le=1)
    reduce_only_drawdown: Decimal | None = Field(default=Decimal("0.10"), gt=0, le=1)
    flatten_drawdown: Decimal | None = Field(default=Decimal("0.20"), gt=0, le=1)
    rearm_hysteresis: Decimal = Field(default=Decimal("0.02"), ge=0)

    hedge_symbol: str = Field(default="BTC/USD", pattern=r"^[A-Z0-9]+/[A-Z0-9]+$")
    quantity_increment: Decimal = Field(default=Decimal("0.00000001"), gt=0)
    min_quantity: Decimal = Field(default=Decimal("0.0001"), ge=0)
    orders_enabled: bool = Field(default=True, description="emit SubmitOrder commands to the OMS")

    accounts: list[str] = Field(default_factory=list, description="accounts hedged from start-up")
    revalue_interval_s: float = Field(
        default=5.0, gt=0, description="how often every tracked account is valued at the latest prices"
    )
    balance_quiet_s: float = Field(
        default=1.0,
        ge=0,
        description="an account whose balances changed more recently waits for the next tick: the other assets of"
        " the same OMS change (a fill moves base and quote) may still be on the way",
    )

    commands_topic: str = OMS_COMMANDS
    order_events_topic: str = OMS_ORDER_EVENTS
    balance_events_topic: str = Field(default=OMS_BALANCE_EVENTS, description="where BalanceChanged is consumed")
    recommendation_topic: str = HEDGE_RECOMMENDATION_EVENTS
    target_topic: str = Field(
        default=HEDGE_TARGET_EVENTS, description="targets and ApprovalRequested for overrides (hitl consumes them)"
    )
    decisions_topic: str = Field(default=HITL_DECISIONS, description="where ApprovalDecided is consumed")
    marketdata_book_topic: str = BOOK_TOPIC
    marketdata_trade_topic: str = TRADE_TOPIC
    feature_events_topic: str = Field(
        default=ANALYTICS_FEATURE_EVENTS, description="where FeaturesComputed is consumed"
    )

    @model_validator(mode="after")
    def _consistent_policy(self) -> Self:
        try:
            self.policy()
        except HedgePolicyError as exc:
            name = _POLICY_SETTING.get(exc.field, exc.field)
            raise ValueError(f"{env_name(name)}: {str(exc).split(': ', 1)[1]}") from None
        return self

    @property
    def quote_asset(self) -> str:
        return self.hedge_symbol.split("/")[1]

    @property
    def base_asset(self) -> str:
        return self.hedge_symbol.split("/")[0]

    def policy(self) -> HedgePolicy:
        """The domain policy these settings describe (HedgePolicyError names the contradiction)."""
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
            floor=self.target_floor,
            cap=self.target_cap,
            band=self.rebalance_band,
            ewma_lambda=self.ewma_lambda,
            levels=tuple((level, value) for level, value in thresholds.items() if value is not None),
            rearm_hysteresis=self.rearm_hysteresis,
        )


@lru_cache(maxsize=1)
def get_settings() -> HedgeSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(HedgeSettings)
