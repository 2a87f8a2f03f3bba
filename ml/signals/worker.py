"""The signal worker: `analytics.feature-events.v1` in (through the inbox), the champion's prediction out on
`ml.signals.v1` (through the `ml` outbox, same transaction).

The model is the registry's `champion`, loaded at start with its feature order and class names; a bar missing one of
those features is not scored (no signal: a guess from a partial row would be worse than none) and is counted.
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
from sqlalchemy.ext.asyncio import AsyncSession

from ml.tracking import LoadedModel
from shared.contracts.base import ContractViolation
from shared.contracts.features import FeaturesComputed
from shared.contracts.registry import new_envelope, parse_as
from shared.contracts.signals import SignalPublished
from shared.events import Envelope
from shared.events.outbox import add_to_outbox
from shared.events.tables import EventTables
from shared.events.topics import ML_SIGNALS

PRODUCER = "ml"
SCHEMA = "ml"
PROBABILITY_PLACES = Decimal("0.000001")


class ModelMismatch(ValueError):
    """The registered model cannot score the feature stream (a feature it needs is not a streamed feature)."""


class SignalWorker:
    """Handler of the features topic for `run_consumer` (idempotent through the consumer's inbox)."""

    def __init__(self, tables: EventTables, model: LoadedModel, *, horizon_s: int) -> None:
        streamed = set(FeaturesComputed.model_fields)
        missing = [name for name in model.feature_names if name not in streamed]
        if not model.feature_names or missing:
            raise ModelMismatch(
                f"model {model.name} v{model.version} needs features the stream does not carry: {missing or 'none named'}"
            )
        if not model.classes:
            raise ModelMismatch(f"model {model.name} v{model.version} names no classes")
        self.tables = tables
        self.model = model
        self.horizon_s = horizon_s
        self.skipped_incomplete = 0

    def score(self, features: FeaturesComputed) -> SignalPublished | None:
        """The signal of one bar, None when a feature the model needs is null."""
        values = [getattr(features, name) for name in self.model.feature_names]
        if any(value is None for value in values):
            self.skipped_incomplete += 1
            return None
        proba = self.model.trainer.predict_proba(np.asarray([values], dtype=np.float64))[0]
        if proba.shape[0] != len(self.model.classes):
            raise ModelMismatch(f"model {self.model.name} gives {proba.shape[0]} classes, names {self.model.classes}")
        best = int(np.argmax(proba))
        return SignalPublished(
            venue=features.venue,
            symbol=features.symbol,
            bar_start=features.bar_start,
            horizon_s=self.horizon_s,
            label=self.model.classes[best],
            probability=Decimal(str(float(proba[best]))).quantize(PROBABILITY_PLACES),
            model_name=self.model.name,
            model_version=self.model.version,
        )

    async def handle(self, session: AsyncSession, envelope: Envelope) -> None:
        """Score one feature bar and queue its signal."""
        features = parse_as(FeaturesComputed, envelope)
        signal = self.score(features)
        if signal is None:
            return
        try:
            out = new_envelope(signal, producer=PRODUCER, aggregate_id=signal.symbol)
        except ValueError as exc:
            raise ContractViolation(str(exc)) from None
        await add_to_outbox(session, self.tables, topic=ML_SIGNALS, envelope=out, key=signal.symbol)
