"""Datasets built from the stored feature table (a replayed synthetic market written by the feature pipeline), and
the tree trainers fitted on them: saved, loaded back, predicting bit for bit the same."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import numpy as np
import optuna
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from data.features import store
from ml.datasets import Dataset, DatasetSpec
from ml.datasets.build import DatasetError, build
from ml.trainers import UnknownTrainerError, create, trainer
from ml.trainers.common import METADATA, ModelFormatError, TrainerError
from ml.validation import cross_validate, purged_walk_forward
from tests.kit import ml as kit

BARS = 400


@pytest.fixture(scope="module")
def symbol() -> str:
    return f"M{uuid.uuid4().hex[:8].upper()}/USD"


@pytest.fixture
async def stored(engine: AsyncEngine, symbol: str) -> Dataset:
    """The dataset built from the store after the replayed bars were written to it (again: an upsert)."""
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions.begin() as session:
        await store.save_bars(session, kit.replayed_bars(symbol, BARS))
    async with sessions() as session:
        return await build(session, kit.spec(symbol, BARS))


async def test_the_dataset_from_the_store_is_the_replayed_one_with_the_same_version(
    stored: Dataset, symbol: str
) -> None:
    in_memory = kit.dataset(symbol, BARS)
    assert stored.version == in_memory.version
    assert len(stored) > 300
    assert np.array_equal(stored.features, in_memory.features)
    assert np.array_equal(stored.labels, in_memory.labels)
    assert np.array_equal(stored.event_end, in_memory.event_end)
    assert stored.classes == ("down", "flat", "up")
    assert set(np.unique(stored.labels)) == {0, 1, 2}
    assert (stored.event_end > stored.event_start).all()
    assert (stored.weights > 0).all()
    assert (stored.weights <= 1).all()


async def test_missing_features_and_empty_ranges_are_clear_errors(engine: AsyncEngine) -> None:
    symbol = f"E{uuid.uuid4().hex[:8].upper()}/USD"
    async with async_sessionmaker(engine)() as session:
        with pytest.raises(DatasetError, match="feature 'alpha_191' is not in the store"):
            await build(session, DatasetSpec("synthetic", symbol, kit.START, kit.START, ("ofi", "alpha_191")))
        with pytest.raises(DatasetError, match=f"too few samples for synthetic {symbol}.*0 labelled rows"):
            await build(session, kit.spec(symbol, BARS))


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
async def test_tree_trainers_fit_save_load_and_predict_bit_for_bit(stored: Dataset, name: str, tmp_path: Path) -> None:
    cls = trainer(name)
    rounds = {"lightgbm": {"num_boost_round": 30, "num_threads": 1}, "xgboost": {"num_boost_round": 30, "nthread": 1}}
    model = create(name, rounds[name], 7, classes=stored.classes, feature_names=stored.feature_names)
    model.fit(stored.features, stored.labels, stored.weights)
    proba = model.predict_proba(stored.features)
    assert proba.shape == (len(stored), 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    model.save(tmp_path / name)
    loaded = cls.load(tmp_path / name)
    assert np.array_equal(loaded.predict_proba(stored.features), proba)
    metadata = json.loads((tmp_path / name / METADATA).read_text())
    assert metadata["trainer"] == name
    assert metadata["classes"] == ["down", "flat", "up"]
    assert metadata["feature_names"] == list(kit.FEATURE_SET)
    assert metadata["seed"] == 7
    again = create(name, rounds[name], 7, classes=stored.classes)
    again.fit(stored.features, stored.labels, stored.weights)
    assert np.array_equal(again.predict_proba(stored.features), proba)  # deterministic for a seed

    folds = purged_walk_forward(stored.event_start, stored.event_end, 3)
    scores = cross_validate(
        lambda: create(name, rounds[name], 7, classes=stored.classes),
        stored.features,
        stored.labels,
        folds,
        stored.weights,
    )
    assert all(0.0 <= score["hit_rate"] <= 1.0 and score["log_loss"] > 0 for score in scores)

    other = "xgboost" if name == "lightgbm" else "lightgbm"
    with pytest.raises(ModelFormatError, match=f"holds a model of trainer '{name}', not '{other}'"):
        trainer(other).load(tmp_path / name)
    metadata["format_version"] = 99
    (tmp_path / name / METADATA).write_text(json.dumps(metadata))
    with pytest.raises(ModelFormatError, match="format_version 99; this version reads format_version 1"):
        cls.load(tmp_path / name)
    with pytest.raises(ModelFormatError, match="holds no saved model"):
        cls.load(tmp_path / "nothing")


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_tree_trainers_refuse_bad_input_naming_it(name: str) -> None:
    cls = trainer(name)
    features = np.zeros((10, 3))
    with pytest.raises(TrainerError, match="labels must have shape"):
        cls().fit(features, np.zeros(9, dtype=np.int64))
    with pytest.raises(TrainerError, match="at least 2 classes"):
        cls().fit(features, np.zeros(10, dtype=np.int64))
    with pytest.raises(TrainerError, match="weights must be 10 finite values"):
        cls().fit(features, np.arange(10) % 2, np.full(10, -1.0))
    with pytest.raises(TrainerError, match="weights sum to 0"):
        cls().fit(features, np.arange(10) % 2, np.zeros(10))
    with pytest.raises(TrainerError, match="infinite"):
        cls().fit(np.full((10, 3), np.inf), np.arange(10) % 2)
    with pytest.raises(TrainerError, match="not fitted"):
        cls().predict_proba(features)
    with pytest.raises(TrainerError, match="parameter 'depth_of_field'"):
        cls({"depth_of_field": 3})
    with pytest.raises(UnknownTrainerError, match="unknown trainer 'catboost'"):
        trainer("catboost")


@pytest.mark.parametrize("name", ["lightgbm", "xgboost"])
def test_search_spaces_give_parameters_the_trainer_accepts(name: str) -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(3):
        params = trainer(name).search_space(study.ask())
        assert params
        assert create(name, params).params == {**create(name).params, **params}
