"""Settings of the hitl service."""

from __future__ import annotations

from functools import lru_cache

from shared.config import AetherSettings, load_settings


class HitlSettings(AetherSettings):
    service_name: str = "hitl"


@lru_cache(maxsize=1)
def get_settings() -> HitlSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(HitlSettings)
