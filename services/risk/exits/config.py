"""Settings of the exit brackets; RiskSettings inherits them (AETHER_ prefix like every setting)."""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from shared.events.topics import OMS_COMMANDS, OMS_ORDER_EVENTS, RISK_CONTROLS, RISK_EXIT_EVENTS
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC


class ExitSettings(BaseModel):
    """Fields the exit engine reads; the risk service's settings class mixes this in."""

    exits_enabled: bool = Field(default=True, description="run the exit workers (consumers, clock) in this process")
    exits_order_events_topic: str = OMS_ORDER_EVENTS
    exits_commands_topic: str = OMS_COMMANDS
    # Where trading states, limits and exit policies are published for the OMS (compacted; services/risk/controls.py).
    risk_controls_topic: str = RISK_CONTROLS
    exits_events_topic: str = RISK_EXIT_EVENTS
    exits_book_topic: str = BOOK_TOPIC
    exits_trade_topic: str = TRADE_TOPIC
    exits_consumer_group: str = Field(default="risk.exits", description="prefix of the Kafka consumer groups")
    exits_marketdata_offset_reset: Literal["latest", "earliest"] = Field(
        default="latest", description="where a new consumer group starts reading market data"
    )
    exits_order_events_offset_reset: Literal["latest", "earliest"] = Field(
        default="latest",
        description="where a new consumer group starts reading OMS order events (history before the first start "
        "is not armed)",
    )
    exits_entry_max_age_s: float = Field(
        default=3_600, gt=0, description="entry fills older than this (by event time) do not arm a new bracket"
    )
    exits_clock_interval_s: float = Field(default=1.0, gt=0, description="how often time limits are checked")
    exits_price_increments: dict[str, Decimal] = Field(
        default_factory=lambda: {"BTC/USD": Decimal("0.1"), "ETH/USD": Decimal("0.01")},
        description="price grid per symbol for exit levels derived from percentages (JSON)",
    )
    exits_default_price_increment: Decimal = Field(default=Decimal("0.01"), gt=0)

    def exits_price_increment(self, symbol: str) -> Decimal:
        """The price grid of `symbol` (policy levels are rounded onto it)."""
        return self.exits_price_increments.get(symbol, self.exits_default_price_increment)
