"""Settings of the analytics service."""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache

from pydantic import Field

from shared.config import AetherSettings, load_settings
from shared.events.topics import OMS_ORDER_EVENTS


class AnalyticsSettings(AetherSettings):
    service_name: str = "analytics"
    # The anomaly log (docs/marketdata.md): how often to scan, and what counts as an anomaly.
    anomaly_scan_s: float = Field(default=60.0, gt=0)
    anomaly_stale_after_s: int = Field(default=300, ge=1)
    anomaly_window_minutes: int = Field(default=120, ge=10, le=10_080)
    anomaly_max_gap_minutes: int = Field(default=5, ge=1)
    anomaly_jump_sigmas: float = Field(default=6.0, gt=0)
    # Trading anomalies (services/analytics/trading.py) from the OMS's order events.
    order_events_topic: str = Field(default=OMS_ORDER_EVENTS, description="where the OMS's order events are consumed")
    anomaly_slippage_bps: Decimal = Field(default=Decimal(50), gt=0)
    anomaly_slippage_book_age_s: int = Field(default=60, ge=1)
    anomaly_fill_rate_window_minutes: int = Field(default=60, ge=1, le=10_080)
    anomaly_fill_rate_min_orders: int = Field(default=10, ge=1)
    anomaly_fill_rate_threshold: Decimal = Field(default=Decimal("0.2"), gt=0, le=1)
    # PnL jumps (services/analytics/pnl_jumps.py): a move of an account's PnL in one symbol, in the quote asset.
    anomaly_pnl_jump_quote: Decimal = Field(default=Decimal(1_000), gt=0)
    anomaly_pnl_jump_window_minutes: int = Field(default=5, ge=1, le=10_080)


@lru_cache(maxsize=1)
def get_settings() -> AnalyticsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(AnalyticsSettings)
