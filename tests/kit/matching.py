"""The matching engine's vocabulary in its unit tests: the start time, sides, liquidity and report kinds."""

from __future__ import annotations

from datetime import UTC, datetime

from shared.domain.matching import ReportKind
from shared.domain.types import Liquidity, OrderSide

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
BUY, SELL = OrderSide.BUY, OrderSide.SELL
MAKER, TAKER = Liquidity.MAKER, Liquidity.TAKER
ACCEPTED, REJECTED, FILL, CANCELED, TRIGGERED = (
    ReportKind.ACCEPTED,
    ReportKind.REJECTED,
    ReportKind.FILL,
    ReportKind.CANCELED,
    ReportKind.TRIGGERED,
)
