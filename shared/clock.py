"""The platform's one wall clock: services inject it; the pure domain takes time as an argument."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, tz-aware UTC."""
    return datetime.now(UTC)


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of a tz-aware moment (the daily loss limit counts fills by it)."""
    return moment.astimezone(UTC).date()
