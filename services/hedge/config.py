"""Settings of the hedge service."""

from __future__ import annotations

from functools import lru_cache

from shared.config import AetherSettings, load_settings


class HedgeSettings(AetherSettings):
    service_name: str = "hedge"


@lru_cache(maxsize=1)
def get_settings() -> HedgeSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(HedgeSettings)
