"""Settings of the analytics service."""

from __future__ import annotations

from functools import lru_cache

from shared.config import AetherSettings, load_settings


class AnalyticsSettings(AetherSettings):
    service_name: str = "analytics"


@lru_cache(maxsize=1)
def get_settings() -> AnalyticsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(AnalyticsSettings)
