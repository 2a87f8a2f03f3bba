"""Request and response models of the analytics service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.contracts.analytics import AnomalyKind
from shared.domain.money import DecimalString
from shared.web import SYMBOL_KEYS_SCHEMA


class CandleInterval(StrEnum):
    """The stored candle widths (shared/db/marketdata.py CANDLE_VIEWS)."""

    ONE_MINUTE = "1m"
    ONE_HOUR = "1h"
    ONE_DAY = "1d"


class ReturnsInterval(StrEnum):
    """Candle widths whose returns the correlations use."""

    ONE_MINUTE = "1m"
    ONE_HOUR = "1h"


class _Read(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CandleRead(_Read):
    """One candle built from stored trades; `bucket` is its start (UTC)."""

    venue: str
    symbol: str
    bucket: datetime
    open: DecimalString
    high: DecimalString
    low: DecimalString
    close: DecimalString
    volume: DecimalString
    notional: DecimalString
    trade_count: int


class TradeRead(_Read):
    """One stored public trade; `side` is the aggressor's."""

    venue: str
    symbol: str
    trade_id: str
    traded_at: datetime
    price: DecimalString
    quantity: DecimalString
    side: Literal["buy", "sell"]


class LevelRead(_Read):
    """One price level."""

    price: DecimalString
    qty: DecimalString


class BookSnapshotRead(_Read):
    """The top levels per side, best first, as stored (`reason`: a feed snapshot or the interval)."""

    venue: str
    symbol: str
    taken_at: datetime
    sequence: int
    reason: Literal["snapshot", "interval"]
    bids: list[LevelRead]
    asks: list[LevelRead]


class FeedHealth(_Read):
    """One venue + symbol: when it last traded and stored a book, how stale it is, minutes without trades."""

    venue: str
    symbol: str
    last_trade_at: datetime | None
    last_snapshot_at: datetime | None
    staleness_s: float | None = Field(description="seconds since the last trade; null when none is stored")
    stale: bool
    empty_minutes: int = Field(description="minutes of the window without a trade")


class MarketDataHealth(_Read):
    """Every feed seen in the candles or the window, and what the window was."""

    checked_at: datetime
    stale_after_s: int
    window_minutes: int
    feeds: list[FeedHealth]


class Correlations(_Read):
    """Pearson correlations of log returns of candle closes over buckets every symbol has; null where a series is
    constant or fewer than 3 returns line up."""

    interval: ReturnsInterval
    start: datetime
    end: datetime
    points: int = Field(description="aligned returns per symbol")
    symbols: list[str]
    matrix: dict[str, dict[str, float | None]] = Field(json_schema_extra=SYMBOL_KEYS_SCHEMA)


class AnomalyRead(_Read):
    """One anomaly of the log; `account_id` is null for market-data anomalies."""

    anomaly_id: str
    kind: AnomalyKind
    venue: str
    symbol: str
    account_id: str | None
    observed_at: datetime
    detected_at: datetime
    magnitude: DecimalString
    detail: str
