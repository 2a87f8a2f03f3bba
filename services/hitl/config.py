"""Settings of the hitl service."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, SecretStr

from shared.config import AetherSettings, load_settings
from shared.events.topics import (
    HEDGE_TARGET_EVENTS,
    HITL_CONTROLS,
    HITL_DECISIONS,
    OMS_ORDER_EVENTS,
    REPORTS_ALLOCATION_EVENTS,
    RISK_TRADING_STATE_EVENTS,
)


class HitlSettings(AetherSettings):
    service_name: str = "hitl"
    accounts_url: str = Field(
        default="http://127.0.0.1:8004", description="base URL of the accounts service (the page logs in through it)"
    )
    decisions_topic: str = Field(default=HITL_DECISIONS, description="where ApprovalDecided is published")
    hitl_controls_topic: str = Field(
        default=HITL_CONTROLS, description="compacted topic of the approval policies the OMS enforces"
    )
    order_events_topic: str = Field(default=OMS_ORDER_EVENTS, description="where ApprovalRequested is consumed")
    risk_events_topic: str = Field(
        default=RISK_TRADING_STATE_EVENTS, description="the risk service's ApprovalRequested (limit raise, resume)"
    )
    hedge_events_topic: str = Field(
        default=HEDGE_TARGET_EVENTS, description="where the hedge service's ApprovalRequested (overrides) is consumed"
    )
    allocation_events_topic: str = Field(
        default=REPORTS_ALLOCATION_EVENTS, description="where the capital allocator's ApprovalRequested is consumed"
    )
    requests_consumer_group: str = Field(default="hitl.approval-requests", min_length=1)
    expiry_interval_s: float = Field(default=1.0, gt=0, le=300, description="how often due requests are expired")
    policy_mirror_interval_s: float = Field(
        default=2.0, gt=0, le=300, description="how often every current policy is re-written to Redis for the OMS"
    )
    otp_max_age_s: int = Field(default=120, ge=1, le=900, description="how fresh a TOTP proof must be to vote")
    login_timeout_s: float = Field(default=5.0, gt=0, le=60)
    # The inbox's service identity at the accounts service (scope auth:relay_client): with it, each director's
    # login and step-up are counted against their own address instead of the inbox's (docs/security.md).
    accounts_client_id: str | None = Field(default=None, min_length=1, max_length=100)
    accounts_client_secret: SecretStr | None = None


@lru_cache(maxsize=1)
def get_settings() -> HitlSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(HitlSettings)
