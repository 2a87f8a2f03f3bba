"""Settings of the backtest service."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field

from shared.config import AetherSettings, load_settings


class BacktestSettings(AetherSettings):
    service_name: str = "backtest"

    backtest_workers: int = Field(default=2, ge=1, le=64, description="worker processes that execute runs")
    backtest_data_dir: Path = Field(
        default=Path("data"), description="the directory a run's `source` files are read from (nothing outside it)"
    )
    backtest_max_sweep_runs: int = Field(default=500, ge=1, le=100_000, description="the largest grid a sweep takes")


@lru_cache(maxsize=1)
def get_settings() -> BacktestSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(BacktestSettings)
