"""Settings of the reports service."""

from __future__ import annotations

from functools import lru_cache
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, model_validator

from shared.audit.anchors import AnchorSettings
from shared.config import load_settings
from shared.events.topics import (
    HITL_DECISIONS,
    OMS_BALANCE_EVENTS,
    OMS_CASHFLOW_EVENTS,
    OMS_ORDER_EVENTS,
    REPORTS_ALLOCATION_EVENTS,
)
from shared.marketdata import BOOK_TOPIC, TRADE_TOPIC


class ReportsSettings(AnchorSettings):
    """The reports service also runs the audit anchoring job, hence the `AETHER_AUDIT_ANCHOR_*` settings."""

    service_name: str = "reports"

    quote_asset: str = Field(default="USD", pattern=r"^[A-Z0-9]+$", description="the asset NAV and PnL are in")
    time_zone: str = Field(default="UTC", description="where days are cut for the firm view and unlisted accounts")
    account_time_zones: dict[str, str] = Field(
        default_factory=dict, description="account id -> IANA time zone its days are cut in (others: time_zone)"
    )
    max_range_days: int = Field(default=366, ge=1, le=3_660, description="the longest from..to a report covers")
    order_events_topic: str = Field(default=OMS_ORDER_EVENTS, description="where OrderFilled is consumed")
    balance_events_topic: str = Field(default=OMS_BALANCE_EVENTS, description="where BalanceChanged is consumed")
    cashflow_events_topic: str = Field(default=OMS_CASHFLOW_EVENTS, description="where CashFlowRecorded is consumed")
    marketdata_book_topic: str = Field(default=BOOK_TOPIC, description="book snapshots and deltas (mid prices)")
    marketdata_trade_topic: str = Field(default=TRADE_TOPIC, description="trades (price when no book is known)")
    allocation_events_topic: str = Field(
        default=REPORTS_ALLOCATION_EVENTS, description="where the allocator's proposals (ApprovalRequested) go"
    )
    decisions_topic: str = Field(default=HITL_DECISIONS, description="where ApprovalDecided closes a proposal")
    allocation_check_interval_s: float = Field(
        default=300.0, ge=0, le=86_400, description="seconds between the allocator's drift checks (0: only on request)"
    )

    @model_validator(mode="after")
    def _known_zones(self) -> Self:
        for name, zone in [("time_zone", self.time_zone), *self.account_time_zones.items()]:
            try:
                ZoneInfo(zone)
            except (ValueError, ZoneInfoNotFoundError, OSError):
                raise ValueError(f"{name}: unknown time zone {zone!r}") from None
        return self

    def zone_of(self, account_id: str | None) -> str:
        """The time zone an account's days are cut in (the firm's for None or an unlisted account)."""
        return self.account_time_zones.get(account_id or "", self.time_zone)


@lru_cache(maxsize=1)
def get_settings() -> ReportsSettings:
    """Read once per process; tests pass their own settings to create_app instead."""
    return load_settings(ReportsSettings)
