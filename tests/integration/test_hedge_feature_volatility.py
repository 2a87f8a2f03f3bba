"""The hedge takes its volatility from the analytics features (volatility_source=features): the variance per
1-minute bar is rv^2 / bars, prices no longer move it, and the target follows it."""

from __future__ import annotations

import math
from datetime import timedelta
from decimal import Decimal

from services.hedge.consumers import handle_feature_event
from services.hedge.repository import HedgeRepository
from shared.contracts.features import FeaturesComputed
from shared.contracts.registry import new_envelope
from shared.db import UnitOfWork
from tests.kit.factories import account_id
from tests.kit.hedge import T0, Hedge, HedgeFactory

FEATURES = dict.fromkeys(FeaturesComputed.model_fields, None)


async def _features(hedge: Hedge, minute: int, **values: float | None) -> None:
    event = FeaturesComputed.model_validate(
        {**FEATURES, "venue": "kraken", "symbol": hedge.symbol, "bar_start": T0 + timedelta(minutes=minute),
         "bar_seconds": 60, **values}
    )  # fmt: skip
    envelope = new_envelope(event, producer="analytics", aggregate_id=hedge.symbol)
    async with UnitOfWork(hedge.adapters.context.sessionmaker) as uow:
        await handle_feature_event(hedge.adapters, uow.session, envelope)


async def _variance(hedge: Hedge) -> Decimal:
    async with UnitOfWork(hedge.adapters.context.sessionmaker) as uow:
        row = await HedgeRepository(uow.session).volatility(hedge.symbol)
    assert row is not None
    return Decimal(row["variance"])


async def test_volatility_comes_from_the_realized_volatility_feature(start_hedge: HedgeFactory) -> None:
    account = account_id()
    async with start_hedge(volatility_source="features", volatility_feature="rv_60") as hedge:
        await _features(hedge, 0, rv_60=0.5)  # before any price: nothing to attach it to
        await hedge.price("100", T0)
        await hedge.price("90", T0 + timedelta(minutes=1))  # -10 %: the EWMA would saturate; features mode ignores
        assert await _variance(hedge) == 0

        await _features(hedge, 1, rv_60=0.06)  # per bar: 0.06^2 / 60 = 0.00006
        assert await _variance(hedge) == Decimal("0.00006")
        await _features(hedge, 1, rv_60=0.6)  # the same bar again (older or equal): ignored
        await _features(hedge, 2, rv_60=None)  # not enough bars yet: left as it was
        assert await _variance(hedge) == Decimal("0.00006")

        await hedge.holdings(account, "0", "100")
        status = await hedge.status(account)
    # sqrt(0.00006) = 0.0077 per bar, scored against vol_saturation 0.02 in the target.
    assert math.isclose(float(Decimal(status["volatility"])), math.sqrt(0.00006), rel_tol=1e-12)


async def test_without_a_realized_volatility_the_hedge_judges_nothing(start_hedge: HedgeFactory) -> None:
    account = account_id()
    async with start_hedge(volatility_source="features", volatility_feature="rv_60") as hedge:
        await hedge.price("100", T0)  # priced, but no feature yet: the variance is unknown, not zero
        await hedge.holdings(account, "0", "100")
        unknown = await hedge.status(account)
        await _features(hedge, 1, rv_60=0.06)
        await hedge.holdings(account, "0", "100")
        known = await hedge.status(account)
    assert (unknown["computed_target"], unknown["effective_target"], unknown["evaluated_at"]) == (None, None, None)
    assert unknown["volatility"] is None  # unknown, not a calm 0
    assert known["computed_target"] is not None
    assert math.isclose(float(Decimal(known["volatility"])), math.sqrt(0.00006), rel_tol=1e-12)
