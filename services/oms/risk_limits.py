"""The UTC day the daily loss limit counts from (the limits themselves come from services/oms/controls.py)."""

from __future__ import annotations

from datetime import UTC, datetime, time


def start_of_utc_day(now: datetime) -> datetime:
    """00:00 UTC of `now`'s UTC day: the daily loss limit counts fills from there."""
    return datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
