"""Settings of the reports service."""

from __future__ import annotations

from functools import lru_cache

from shared.audit.anchors import AnchorSettings
from shared.config import load_settings


class ReportsSettings(AnchorSettings):
    """The reports service also runs the audit anchoring job, hence the `AETHER_AUDIT_ANCHOR_*` settings."""

    service_name: str = "reports"


@lru_cache(maxsize=1)
def get_settings() -> ReportsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(ReportsSettings)
