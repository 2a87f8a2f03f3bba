"""Settings of the oms service."""

from __future__ import annotations

from functools import lru_cache

from shared.config import AetherSettings, load_settings


class OmsSettings(AetherSettings):
    service_name: str = "oms"


@lru_cache(maxsize=1)
def get_settings() -> OmsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(OmsSettings)
