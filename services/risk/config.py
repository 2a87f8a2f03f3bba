"""Settings of the risk service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field

from services.risk.exits.config import ExitSettings
from shared.auth.service_tokens import ServiceIdentitySettings
from shared.config import AetherSettings, load_settings
from shared.events.topics import HITL_DECISIONS


class RiskSettings(AetherSettings, ExitSettings, ServiceIdentitySettings):
    service_name: str = "risk"
    auto_apply_recommendations: bool = Field(
        default=False, description="AETHER_AUTO_APPLY_RECOMMENDATIONS: apply the hedge service's kill-switch advice"
    )
    decisions_topic: str = Field(
        default=HITL_DECISIONS, description="where ApprovalDecided is consumed (held limit raises and resumes)"
    )


@lru_cache(maxsize=1)
def get_settings() -> RiskSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(RiskSettings)
