"""What the paper venue trades and charges: its instruments and the accounts' fee schedules, as configuration.

Read by the paper venue process (`services/paper`) and by the OMS (which checks orders against the same rules);
one definition for both (AETHER_INSTRUMENTS and AETHER_ACCOUNT_FEE_SCHEDULES are JSON).
"""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from shared.domain.fees import KRAKEN_SPOT_FEE_SCHEDULE, MAX_FEE_RATE, AccountFeeSchedules, FeeSchedule, FeeTier
from shared.domain.money import InstrumentSpec
from shared.domain.types import AccountId, Symbol
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


class PaperMarketSettings(BaseModel):
    """Mixed into the settings of a process that runs or trades on the paper venue (the venue itself, the OMS)."""

    instruments: dict[str, InstrumentConfig] = Field(default_factory=default_instruments)
    account_fee_schedules: dict[str, list[FeeTierConfig]] = Field(
        default_factory=dict,
        description="accounts that trade under their own fee schedule (tiers by 30-day volume); others pay Kraken's",
    )
    marketdata_book_topic: str = "marketdata.book-events.v1"
    marketdata_trade_topic: str = "marketdata.trade-events.v1"

    def instrument_specs(self) -> dict[Symbol, InstrumentSpec]:
        """Every configured instrument's rules, by symbol."""
        return {Symbol(symbol): config.spec(symbol) for symbol, config in self.instruments.items()}

    def fee_schedules(self) -> AccountFeeSchedules:
        """Each account's fee schedule: its own where configured, Kraken's spot schedule otherwise."""
        by_account = {
            AccountId(account): FeeSchedule(tuple(FeeTier(t.min_volume_usd, t.maker_rate, t.taker_rate) for t in tiers))
            for account, tiers in self.account_fee_schedules.items()
        }
        return AccountFeeSchedules(KRAKEN_SPOT_FEE_SCHEDULE, by_account)
