"""Settings of the risk service."""

from __future__ import annotations

from functools import lru_cache

from services.risk.exits.config import ExitSettings
from shared.config import AetherSettings, load_settings


class RiskSettings(AetherSettings, ExitSettings):
    service_name: str = "risk"


@lru_cache(maxsize=1)
def get_settings() -> RiskSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(RiskSettings)
