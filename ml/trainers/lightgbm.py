"""LightGBM gradient-boosted trees (`lgb.train` on the rows as given; NaN is LightGBM's missing value)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from ml.trainers.base import SearchTrial
from ml.trainers.common import (
    ModelFormatError,
    TrainerError,
    check_fit,
    check_predict,
    mean_one,
    merged_params,
    read_metadata,
    write_metadata,
)

MODEL = "model.txt"
DEFAULTS: dict[str, Any] = {
    "num_boost_round": 100,
    "learning_rate": 0.05,
    "num_leaves": 31,
    "min_data_in_leaf": 20,
    "feature_fraction": 1.0,
    "bagging_fraction": 1.0,
    "bagging_freq": 0,
    "lambda_l2": 0.0,
    "num_threads": 0,
}


class LightGBMTrainer:
    """Binary or multi-class LightGBM, deterministic for a seed (`deterministic`, row-wise histograms)."""

    name: ClassVar[str] = "lightgbm"
    format_version: ClassVar[int] = 1

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        *,
        classes: tuple[str, ...] | None = None,
        feature_names: tuple[str, ...] = (),
    ) -> None:
        self.params: dict[str, Any] = merged_params(self.name, DEFAULTS, params)
        self.seed = seed
        self.classes = classes
        self.feature_names = feature_names
        self.booster: lgb.Booster | None = None

    def library_params(self, n_classes: int) -> dict[str, Any]:
        """The parameters handed to `lgb.train` (everything but the number of rounds)."""
        params = {key: value for key, value in self.params.items() if key != "num_boost_round"}
        objective = {"objective": "binary"} if n_classes == 2 else {"objective": "multiclass", "num_class": n_classes}
        return {**params, **objective, "seed": self.seed, "deterministic": True, "force_row_wise": True,
                "verbosity": -1}  # fmt: skip

    def fit(
        self,
        features: npt.NDArray[np.float64],
        labels: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64] | None = None,
    ) -> None:
        """Train `num_boost_round` trees on the rows."""
        self.classes = check_fit(features, labels, weights, self.classes)
        params = self.library_params(len(self.classes))
        data = lgb.Dataset(
            features, label=labels, weight=mean_one(weights), params={"verbosity": -1}, free_raw_data=True
        )
        self.booster = lgb.train(params, data, num_boost_round=int(self.params["num_boost_round"]))

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n, n_classes) class probabilities."""
        check_predict(features, None if self.booster is None else self.booster.num_feature())
        assert self.booster is not None  # noqa: S101 (narrowing: check_predict raised otherwise)
        raw = np.asarray(self.booster.predict(features), dtype=np.float64)
        return np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw

    def save(self, directory: Path) -> None:
        """model.txt (LightGBM's text format) and metadata.json."""
        if self.booster is None or self.classes is None:
            raise TrainerError("the model is not fitted: nothing to save")
        write_metadata(directory, self._metadata())
        self.booster.save_model(str(directory / MODEL))

    def _metadata(self) -> dict[str, Any]:
        return {
            "trainer": self.name,
            "format_version": self.format_version,
            "params": self.params,
            "seed": self.seed,
            "classes": list(self.classes or ()),
            "feature_names": list(self.feature_names),
            "library_version": lgb.__version__,
        }

    @classmethod
    def load(cls, directory: Path) -> Self:
        """A trainer with the booster and metadata `save` wrote."""
        metadata = read_metadata(directory, cls.name, cls.format_version)
        if not (directory / MODEL).is_file():
            raise ModelFormatError(f"{directory / MODEL} is missing")
        model = cls(metadata["params"], metadata["seed"], classes=tuple(metadata["classes"]),
                    feature_names=tuple(metadata["feature_names"]))  # fmt: skip
        model.booster = lgb.Booster(model_file=str(directory / MODEL))
        return model

    @classmethod
    def search_space(cls, trial: SearchTrial) -> dict[str, Any]:
        """Rounds, learning rate, leaves, leaf size, column and row sampling, L2."""
        return {
            "num_boost_round": trial.suggest_int("num_boost_round", 50, 500, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
            "num_leaves": trial.suggest_int("num_leaves", 7, 127, log=True),
            "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 5, 200, log=True),
            "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
            "bagging_fraction": trial.suggest_float("bagging_fraction", 0.5, 1.0),
            "bagging_freq": trial.suggest_categorical("bagging_freq", [0, 1, 5]),
            "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
        }
