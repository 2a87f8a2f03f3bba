"""Settings of the OMS."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field, SecretStr

from shared.auth.service_tokens import ServiceIdentitySettings
from shared.config import AetherSettings, load_settings
from shared.events.topics import HITL_CONTROLS, REPORTS_ALLOCATION_EVENTS, RISK_CONTROLS
from shared.venues.paper_config import FeeTierConfig, InstrumentConfig, PaperMarketSettings, default_instruments

__all__ = ["FeeTierConfig", "InstrumentConfig", "OmsSettings", "default_instruments", "get_settings"]


class OmsSettings(AetherSettings, PaperMarketSettings, ServiceIdentitySettings):
    service_name: str = "oms"
    venue: str = Field(default="paper", pattern=r"^(paper)$")
    paper_venue_url: str | None = Field(
        default=None,
        description="base URL of the paper venue process (`aether serve paper`); unset: the venue runs in this process",
    )
    paper_venue_timeout_s: float = Field(
        default=5.0, gt=0, le=60, description="how long a call to the paper venue process may take (then: ambiguous)"
    )
    paper_venue_token: SecretStr | None = Field(
        default=None,
        description="a fixed bearer token for the paper venue process (development and tests; else the service identity)",
    )
    default_approval_threshold: Decimal | None = Field(
        default=None, gt=0, description="order notional (quote) from which new accounts need director approval"
    )
    market_buy_slippage: Decimal = Field(
        default=Decimal("0.05"), ge=0, le=1, description="buffer on the book's walk price reserved for market buys"
    )
    market_data_max_age_s: float = Field(
        default=30.0,
        gt=0,
        le=3_600,
        description="a market order is denied (stale_market_data) when its symbol's latest book is older than this",
    )
    resolve_after_s: float = Field(default=2.0, gt=0, description="age after which a SUBMITTED order is queried")
    resolver_interval_s: float = Field(default=1.0, gt=0)
    command_token_leeway_s: float = Field(
        default=900.0,
        ge=0,
        le=3_600,
        description="how long after its token expired a command published with it is still honored (consumer lag)",
    )
    # The compacted topics of what the OMS enforces (services/oms/controls.py); tests point them at their own.
    risk_controls_topic: str = RISK_CONTROLS
    hitl_controls_topic: str = HITL_CONTROLS
    allocation_events_topic: str = Field(
        default=REPORTS_ALLOCATION_EVENTS, description="the capital allocator's proposals (transfers held for approval)"
    )


@lru_cache(maxsize=1)
def get_settings() -> OmsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(OmsSettings)
