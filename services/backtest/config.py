"""Settings of the backtest service."""

from __future__ import annotations

from functools import lru_cache

from shared.config import AetherSettings, load_settings


class BacktestSettings(AetherSettings):
    service_name: str = "backtest"


@lru_cache(maxsize=1)
def get_settings() -> BacktestSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(BacktestSettings)
