"""XGBoost gradient-boosted trees (`xgb.train` with the hist method; NaN is XGBoost's missing value)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import xgboost as xgb

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

MODEL = "model.ubj"
DEFAULTS: dict[str, Any] = {
    "num_boost_round": 100,
    "eta": 0.1,
    "max_depth": 6,
    "min_child_weight": 1.0,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "lambda": 1.0,
    "max_bin": 256,
    "nthread": 0,
}


class XGBoostTrainer:
    """Binary or multi-class XGBoost (`hist` trees), deterministic for a seed."""

    name: ClassVar[str] = "xgboost"
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
        self.booster: xgb.Booster | None = None

    def library_params(self, n_classes: int) -> dict[str, Any]:
        """The parameters handed to `xgb.train` (everything but the number of rounds)."""
        params = {key: value for key, value in self.params.items() if key != "num_boost_round"}
        objective = (
            {"objective": "binary:logistic"}
            if n_classes == 2
            else {"objective": "multi:softprob", "num_class": n_classes}
        )
        return {**params, **objective, "seed": self.seed, "tree_method": "hist", "verbosity": 0}

    def fit(
        self,
        features: npt.NDArray[np.float64],
        labels: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64] | None = None,
    ) -> None:
        """Train `num_boost_round` trees on the rows."""
        self.classes = check_fit(features, labels, weights, self.classes)
        params = self.library_params(len(self.classes))
        data = xgb.DMatrix(features, label=labels, weight=mean_one(weights), nthread=int(self.params["nthread"]) or -1)
        self.booster = xgb.train(params, data, num_boost_round=int(self.params["num_boost_round"]))

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n, n_classes) class probabilities."""
        check_predict(features, None if self.booster is None else self.booster.num_features())
        assert self.booster is not None  # noqa: S101 (narrowing: check_predict raised otherwise)
        raw = np.asarray(self.booster.predict(xgb.DMatrix(features)), dtype=np.float64)
        return np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw

    def save(self, directory: Path) -> None:
        """model.ubj (XGBoost's binary JSON) and metadata.json."""
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
            "library_version": xgb.__version__,
        }

    @classmethod
    def load(cls, directory: Path) -> Self:
        """A trainer with the booster and metadata `save` wrote."""
        metadata = read_metadata(directory, cls.name, cls.format_version)
        if not (directory / MODEL).is_file():
            raise ModelFormatError(f"{directory / MODEL} is missing")
        model = cls(metadata["params"], metadata["seed"], classes=tuple(metadata["classes"]),
                    feature_names=tuple(metadata["feature_names"]))  # fmt: skip
        booster = xgb.Booster()
        booster.load_model(str(directory / MODEL))
        model.booster = booster
        return model

    @classmethod
    def search_space(cls, trial: SearchTrial) -> dict[str, Any]:
        """Rounds, learning rate, depth, child weight, row and column sampling, L2."""
        return {
            "num_boost_round": trial.suggest_int("num_boost_round", 50, 500, log=True),
            "eta": trial.suggest_float("eta", 0.01, 0.3, log=True),
            "max_depth": trial.suggest_int("max_depth", 2, 10),
            "min_child_weight": trial.suggest_float("min_child_weight", 0.1, 20.0, log=True),
            "subsample": trial.suggest_float("subsample", 0.5, 1.0),
            "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
            "lambda": trial.suggest_float("lambda", 1e-3, 10.0, log=True),
        }
