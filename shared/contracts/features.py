"""Microstructure features of one closed bar (`analytics.feature-events.v1`, keyed by symbol), as the streaming
feature engine (data/features) publishes them; docs/features.md defines every value.

Values are floats (statistics, never money): null where the definition has no value (no trade in the bar, not
enough history, a zero denominator); never NaN or infinite. Floats survive JSON exactly (shortest round trip)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.contracts.base import Message, Timestamp
from shared.contracts.marketdata import SymbolText, VenueName

__all__ = ["FeatureValue", "FeaturesComputed"]

FeatureValue = Annotated[float | None, Field(allow_inf_nan=False)]


class FeaturesComputed(Message):
    """The features of one (venue, symbol, bar); the bar is [bar_start, bar_start + bar_seconds)."""

    TYPE = "FeaturesComputed"

    venue: VenueName
    symbol: SymbolText
    bar_start: Timestamp
    bar_seconds: Annotated[int, Field(gt=0, le=86_400)]
    mid: FeatureValue
    spread: FeatureValue
    spread_bps: FeatureValue
    depth_imbalance: FeatureValue
    ofi: FeatureValue
    signed_volume: FeatureValue
    volume: FeatureValue
    trade_intensity: FeatureValue
    vwap: FeatureValue
    vwap_deviation: FeatureValue
    rv_5: FeatureValue
    rv_15: FeatureValue
    rv_60: FeatureValue
    kyle_lambda: FeatureValue
    amihud: FeatureValue
