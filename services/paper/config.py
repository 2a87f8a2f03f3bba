"""Settings of the paper venue process."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from shared.config import AetherSettings, load_settings
from shared.venues.paper_config import PaperMarketSettings


class PaperSettings(AetherSettings, PaperMarketSettings):
    service_name: str = "paper"
    stream_backlog: int = Field(
        default=10_000,
        ge=1,
        description="updates one stream subscriber may fall behind by before it is dropped (it reconnects and replays)",
    )


@lru_cache(maxsize=1)
def get_settings() -> PaperSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(PaperSettings)
