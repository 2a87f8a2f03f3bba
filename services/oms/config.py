"""Settings of the OMS."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import BaseModel, ConfigDict, Field

from shared.config import AetherSettings, load_settings
from shared.domain.money import InstrumentSpec
from shared.events.topics import HITL_CONTROLS, RISK_CONTROLS


class InstrumentConfig(BaseModel):
    """Trading rules of one instrument, as configured (AETHER_INSTRUMENTS is JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    price_increment: Decimal
    quantity_increment: Decimal
    min_quantity: Decimal
    min_notional: Decimal = Decimal(0)
    quote_step: Decimal = Field(
        default=Decimal("0.01"), gt=0, description="precision of the quote asset (fees, reservations)"
    )

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
        )


DEFAULT_INSTRUMENTS = {
    "BTC/USD": InstrumentConfig(
        price_increment=Decimal("0.1"), quantity_increment=Decimal("0.00000001"), min_quantity=Decimal("0.0001")
    ),
    "ETH/USD": InstrumentConfig(
        price_increment=Decimal("0.01"), quantity_increment=Decimal("0.00000001"), min_quantity=Decimal("0.001")
    ),
}


class OmsSettings(AetherSettings):
    service_name: str = "oms"
    venue: str = Field(default="paper", pattern=r"^(paper)$")
    instruments: dict[str, InstrumentConfig] = Field(default_factory=lambda: dict(DEFAULT_INSTRUMENTS))
    default_approval_threshold: Decimal | None = Field(
        default=None, gt=0, description="order notional (quote) from which new accounts need director approval"
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


@lru_cache(maxsize=1)
def get_settings() -> OmsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(OmsSettings)
