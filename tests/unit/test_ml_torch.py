"""The PyTorch sequence trainer on a dataset of the replayed synthetic market: fitted, saved, loaded back and
predicting the same within 1e-6 (the one test module that imports torch: the import alone takes seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest

from ml.trainers import create, trainer
from ml.trainers.common import METADATA, ModelFormatError, TrainerError
from tests.kit import ml as kit

PARAMS = {"window": 8, "hidden": 8, "epochs": 2, "batch_size": 64}


def test_torch_fits_saves_loads_and_predicts_the_same(tmp_path: Path) -> None:
    data = kit.dataset("TORCH/USD", 400)
    cls = trainer("torch")
    model = create("torch", PARAMS, 3, classes=data.classes, feature_names=data.feature_names)
    model.fit(data.features, data.labels, data.weights)
    proba = model.predict_proba(data.features)
    assert proba.shape == (len(data), 3)
    assert np.allclose(proba.sum(axis=1), 1.0)
    model.save(tmp_path / "torch")
    loaded = cls.load(tmp_path / "torch")
    assert np.abs(loaded.predict_proba(data.features) - proba).max() <= 1e-6
    metadata = json.loads((tmp_path / "torch" / METADATA).read_text())
    assert (metadata["trainer"], metadata["format_version"], metadata["seed"]) == ("torch", 1, 3)
    assert metadata["params"]["window"] == 8

    if model.device.type == "cpu":  # deterministic algorithms on the CPU: the same seed, the same weights
        again = create("torch", PARAMS, 3, classes=data.classes)
        again.fit(data.features, data.labels, data.weights)
        assert np.array_equal(again.predict_proba(data.features), proba)

    # a row is scored from its window of preceding rows only: changing a later row leaves it alone
    changed = data.features.copy()
    changed[200:] += 5.0
    assert np.array_equal(loaded.predict_proba(changed)[:200], loaded.predict_proba(data.features)[:200])

    with pytest.raises(ModelFormatError, match="holds a model of trainer 'torch', not 'lightgbm'"):
        trainer("lightgbm").load(tmp_path / "torch")
    metadata["format_version"] = 0
    (tmp_path / "torch" / METADATA).write_text(json.dumps(metadata))
    with pytest.raises(ModelFormatError, match="torch format_version 0; this version reads format_version 1"):
        cls.load(tmp_path / "torch")


def test_torch_refuses_bad_input_naming_it() -> None:
    cls = trainer("torch")
    params = cls.search_space(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask())
    assert create("torch", params).params == {**create("torch").params, **params}
    with pytest.raises(TrainerError, match="torch parameter 'window' must be a positive integer"):
        cls({"window": 0})
    with pytest.raises(TrainerError, match="parameter 'kernel'"):
        cls({"kernel": 3})
    with pytest.raises(TrainerError, match="labels must be integer class indices"):
        cls(PARAMS).fit(np.zeros((10, 2)), np.zeros(10))  # type: ignore[arg-type]
    with pytest.raises(TrainerError, match="not fitted"):
        cls(PARAMS).predict_proba(np.zeros((3, 2)))
