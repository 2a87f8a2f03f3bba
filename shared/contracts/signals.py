"""The models' signals on `ml.signals.v1` (keyed by symbol): the champion's predicted class for one closed feature
bar and its probability, with the registered model version that produced it (docs/ml.md)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from shared.contracts.base import Message, Timestamp
from shared.contracts.marketdata import SymbolText, VenueName
from shared.domain.money import Fraction

__all__ = ["SignalPublished"]

ModelName = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
ClassName = Annotated[str, Field(min_length=1, max_length=32)]


class SignalPublished(Message):
    """One prediction: `label` (a class of the model, e.g. "up") with `probability`, for the bar at `bar_start`."""

    TYPE = "SignalPublished"

    venue: VenueName
    symbol: SymbolText
    bar_start: Timestamp
    horizon_s: Annotated[int, Field(gt=0, le=30 * 86_400)]
    label: ClassName
    probability: Fraction
    model_name: ModelName
    model_version: Annotated[int, Field(ge=1)]
