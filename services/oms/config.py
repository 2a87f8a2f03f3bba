"""Settings of the OMS."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from shared.config import AetherSettings, load_settings
from shared.domain.fees import KRAKEN_SPOT_FEE_SCHEDULE, MAX_FEE_RATE, AccountFeeSchedules, FeeSchedule, FeeTier
from shared.domain.money import InstrumentSpec
from shared.domain.types import AccountId
from shared.events.topics import HITL_CONTROLS, RISK_CONTROLS
from shared.venues.instruments import venue_precision


class InstrumentConfig(BaseModel):
    """Trading rules of one instrument (AETHER_INSTRUMENTS is JSON); the default is the venue's own table
    (`shared.venues.instruments`), so configure this only to trade another instrument than it lists."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_increment: Decimal = Field(gt=0)
    quantity_increment: Decimal = Field(gt=0)
    min_quantity: Decimal = Field(ge=0)
    min_notional: Decimal = Field(default=Decimal(0), ge=0)
    base_step: Decimal = Field(gt=0, description="precision the venue keeps base balances to")
    quote_step: Decimal = Field(gt=0, description="precision the venue keeps quote balances, costs and fees to")

    def spec(self, symbol: str) -> InstrumentSpec:
        base, quote = symbol.split("/")
        return InstrumentSpec(
            symbol=symbol,
            base=base,
            quote=quote,
            price_increment=self.price_increment,
            quantity_increment=self.quantity_increment,
            min_quantity=self.min_quantity,
            min_notional=self.min_notional,
            base_step=self.base_step,
            quote_step=self.quote_step,
        )

    @classmethod
    def of(cls, spec: InstrumentSpec) -> InstrumentConfig:
        """The configuration that gives back `spec`."""
        return cls(
            price_increment=spec.price_increment,
            quantity_increment=spec.quantity_increment,
            min_quantity=spec.min_quantity,
            min_notional=spec.min_notional,
            base_step=spec.base_step,
            quote_step=spec.quote_step,
        )


class FeeTierConfig(BaseModel):
    """One tier of an account's own fee schedule: rates (fractions, 0.0016 = 0.16 %) from a 30-day USD volume."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_volume_usd: Decimal = Field(ge=0)
    maker_rate: Decimal = Field(ge=0, le=MAX_FEE_RATE)
    taker_rate: Decimal = Field(ge=0, le=MAX_FEE_RATE)


def default_instruments() -> dict[str, InstrumentConfig]:
    """The paper venue's instruments, from the venue precision table."""
    return {symbol: InstrumentConfig.of(spec) for symbol, spec in venue_precision("paper").specs().items()}


class OmsSettings(AetherSettings):
    service_name: str = "oms"
    venue: str = Field(default="paper", pattern=r"^(paper)$")
    instruments: dict[str, InstrumentConfig] = Field(default_factory=default_instruments)
    default_approval_threshold: Decimal | None = Field(
        default=None, gt=0, description="order notional (quote) from which new accounts need director approval"
    )
    account_fee_schedules: dict[str, list[FeeTierConfig]] = Field(
        default_factory=dict,
        description="accounts that trade under their own fee schedule (tiers by 30-day volume); others pay Kraken's",
    )
    market_buy_slippage: Decimal = Field(
        default=Decimal("0.05"), ge=0, le=1, description="buffer on the book's walk price reserved for market buys"
    )
    resolve_after_s: float = Field(default=2.0, gt=0, description="age after which a SUBMITTED order is queried")
    resolver_interval_s: float = Field(default=1.0, gt=0)
    command_token_leeway_s: float = Field(
        default=900.0,
        ge=0,
        le=3_600,
        description="how long after its token expired a command published with it is still honored (consumer lag)",
    )
    marketdata_book_topic: str = "marketdata.book-events.v1"
    marketdata_trade_topic: str = "marketdata.trade-events.v1"
    # The compacted topics of what the OMS enforces (services/oms/controls.py); tests point them at their own.
    risk_controls_topic: str = RISK_CONTROLS
    hitl_controls_topic: str = HITL_CONTROLS

    def fee_schedules(self) -> AccountFeeSchedules:
        """Each account's fee schedule: its own where configured, Kraken's spot schedule otherwise."""
        by_account = {
            AccountId(account): FeeSchedule(tuple(FeeTier(t.min_volume_usd, t.maker_rate, t.taker_rate) for t in tiers))
            for account, tiers in self.account_fee_schedules.items()
        }
        return AccountFeeSchedules(KRAKEN_SPOT_FEE_SCHEDULE, by_account)


@lru_cache(maxsize=1)
def get_settings() -> OmsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(OmsSettings)
