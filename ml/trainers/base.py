"""The one interface every trainer implements; tracking, search and retraining know only this."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import numpy as np
import numpy.typing as npt


class SearchTrial(Protocol):
    """The part of `optuna.trial.Trial` a search space uses (kept structural so trainers need not import optuna)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class Trainer(Protocol):
    """Fit on rows in time order, predict class probabilities, save and load, deterministic for a seed."""

    name: ClassVar[str]  # "lightgbm", "xgboost", "torch"
    format_version: ClassVar[int]  # what `save` writes; `load` refuses another version with a clear error

    params: dict[str, Any]
    seed: int

    def fit(
        self,
        features: npt.NDArray[np.float64],
        labels: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64] | None = None,
    ) -> None:
        """Train on rows in time order (a sequence model windows them itself)."""

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n, n_classes) probabilities for rows in time order."""

    def save(self, directory: Path) -> None:
        """Write the model and its metadata (trainer name, format version, params, seed, classes) to `directory`."""

    @classmethod
    def load(cls, directory: Path) -> Self:
        """Read what `save` wrote; another trainer's or another format version's files are a clear error."""

    @classmethod
    def search_space(cls, trial: SearchTrial) -> dict[str, Any]:
        """Parameters for one search trial (declared per trainer; never empty)."""
