"""The feature names agree wherever they are spelled: the definitions, the wire contract, the table, the migration."""

from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError

from data.features import store
from data.features.batch import OUTPUT_SCHEMA
from data.features.definitions import FEATURES
from shared.contracts.features import FeaturesComputed
from shared.contracts.registry import CONTRACTS
from shared.events.topics import ANALYTICS_FEATURE_EVENTS

MIGRATION = importlib.import_module("shared.db.migrations.versions.0031_marketdata_features")


def test_every_feature_is_in_the_contract_the_table_and_the_migration() -> None:
    assert set(FeaturesComputed.model_fields) - {"venue", "symbol", "bar_start", "bar_seconds"} == set(FEATURES)
    assert tuple(MIGRATION.FEATURES) == FEATURES
    assert [c.name for c in store.features.columns if c.name in FEATURES] == list(FEATURES)
    assert list(OUTPUT_SCHEMA)[3:] == list(FEATURES)
    assert CONTRACTS[(ANALYTICS_FEATURE_EVENTS, "FeaturesComputed")] is FeaturesComputed
    assert ANALYTICS_FEATURE_EVENTS == "analytics.feature-events.v1"


def test_a_feature_value_is_never_nan_or_infinite_on_the_wire() -> None:
    base = dict.fromkeys(FeaturesComputed.model_fields) | {
        "venue": "kraken", "symbol": "BTC/USD", "bar_start": "2026-01-01T00:00:00+00:00", "bar_seconds": 60,
    }  # fmt: skip
    assert FeaturesComputed.model_validate(base | {"rv_5": 0.1}).rv_5 == 0.1
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValidationError, match="rv_5"):
            FeaturesComputed.model_validate(base | {"rv_5": bad})
