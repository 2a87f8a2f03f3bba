"""Settings of the analytics service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.config import AetherSettings, load_settings


class AnalyticsSettings(AetherSettings):
    service_name: str = "analytics"
    # The anomaly log (docs/marketdata.md): how often to scan, and what counts as an anomaly.
    anomaly_scan_s: float = Field(default=60.0, gt=0)
    anomaly_stale_after_s: int = Field(default=300, ge=1)
    anomaly_window_minutes: int = Field(default=120, ge=10, le=10_080)
    anomaly_max_gap_minutes: int = Field(default=5, ge=1)
    anomaly_jump_sigmas: float = Field(default=6.0, gt=0)


@lru_cache(maxsize=1)
def get_settings() -> AnalyticsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(AnalyticsSettings)
