"""The analytics service's messages: market-data and trading anomalies on `analytics.anomaly-events.v1` (the risk
service may act on them; docs/marketdata.md)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field

from shared.contracts.base import Identifier, Message, NonNegativeDecimal, Text, Timestamp
from shared.contracts.marketdata import SymbolText, VenueName

__all__ = ["AnomalyDetected", "AnomalyKind"]

AnomalyId = Annotated[str, Field(pattern=r"^[0-9a-f]{32}$")]


class AnomalyKind(StrEnum):
    """What was seen: a feed without trades too long, a hole in its minutes, a return beyond N sigma, a crossed
    book; an account's fill far from the stored book, its orders' fill rate below the threshold, or its
    mark-to-market PnL in a symbol moving more than the threshold within the window."""

    STALE_FEED = "stale_feed"
    TRADE_GAP = "trade_gap"
    PRICE_JUMP = "price_jump"
    CROSSED_BOOK = "crossed_book"
    SLIPPAGE = "slippage"
    FILL_RATE_DROP = "fill_rate_drop"
    PNL_JUMP = "pnl_jump"


class AnomalyDetected(Message):
    """One anomaly, once (aggregate and key: the symbol); `account_id` is null for market-data anomalies."""

    TYPE = "AnomalyDetected"

    anomaly_id: AnomalyId
    kind: AnomalyKind
    venue: VenueName
    symbol: SymbolText
    account_id: Identifier | None = None
    observed_at: Timestamp
    detected_at: Timestamp
    magnitude: NonNegativeDecimal
    detail: Text
