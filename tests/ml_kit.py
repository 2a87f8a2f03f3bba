"""Test-only ML pieces: a small real trainer (L2 logistic regression fitted by Newton steps in numpy, behind the
Trainer protocol; numpy only, so search worker processes start fast) and a synthetic dataset whose label depends on
its features, so that a trained model beats a planted bad one."""

from __future__ import annotations

import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from ml.datasets import Dataset, DatasetSpec
from ml.trainers.base import SearchTrial, Trainer

FEATURES = ("f0", "f1", "f2", "f3")
CLASSES = ("down", "up")
# Set in a search worker's environment: its first fit creates this file and then hangs (to be SIGKILLed mid-trial).
HANG_FILE_ENV = "AETHER_TEST_HANG_FILE"
# Set in a search worker's environment: every fit appends "<pid> <C>" here (to count what actually ran).
FIT_LOG_ENV = "AETHER_TEST_FIT_LOG"


class LogisticTestTrainer:
    """TEST TRAINER (tests only): logistic regression; `planted_noise` permutes the labels first (a worse model)."""

    name: ClassVar[str] = "test-logistic"
    format_version: ClassVar[int] = 1

    def __init__(self, params: dict[str, Any] | None = None, seed: int = 7) -> None:
        self.params = dict(params or {})
        self.seed = seed
        self.weights: npt.NDArray[np.float64] | None = None  # one per feature, then the intercept

    def fit(
        self,
        features: npt.NDArray[np.float64],
        labels: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64] | None = None,
    ) -> None:
        hang = os.environ.get(HANG_FILE_ENV)
        if hang and not Path(hang).exists():
            Path(hang).write_text(str(os.getpid()))
            threading.Event().wait()  # hangs until the test kills the process
        if self.params.get("planted_noise"):
            labels = np.random.default_rng(self.seed).permutation(labels)
        x = np.hstack([features, np.ones((features.shape[0], 1))])
        sample = np.ones(x.shape[0]) if weights is None else weights
        penalty = np.eye(x.shape[1]) / float(self.params.get("C", 1.0))
        penalty[-1, -1] = 0.0  # the intercept is not shrunk
        w = np.zeros(x.shape[1])
        for _ in range(25):
            p = 1.0 / (1.0 + np.exp(-(x @ w)))
            gradient = x.T @ (sample * (p - labels)) + penalty @ w
            hessian = (x * (sample * p * (1 - p))[:, None]).T @ x + penalty
            w = w - np.linalg.solve(hessian, gradient)
        self.weights = w
        log = os.environ.get(FIT_LOG_ENV)
        if log:
            with open(log, "a") as out:
                out.write(f"{os.getpid()} {self.params.get('C')}\n")

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        assert self.weights is not None, "not fitted"
        up = 1.0 / (1.0 + np.exp(-(features @ self.weights[:-1] + self.weights[-1])))
        return np.column_stack([1.0 - up, up])

    def save(self, directory: Path) -> None:
        assert self.weights is not None, "not fitted"
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "trainer": self.name,
            "format_version": self.format_version,
            "params": self.params,
            "seed": self.seed,
            "weights": self.weights.tolist(),
        }
        (directory / "model.json").write_text(json.dumps(meta))

    @classmethod
    def load(cls, directory: Path) -> Self:
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("trainer") != cls.name or meta.get("format_version") != cls.format_version:
            raise ValueError(f"{directory}: not a {cls.name} v{cls.format_version} model")
        trainer = cls(meta["params"], meta["seed"])
        trainer.weights = np.asarray(meta["weights"], dtype=np.float64)
        return trainer

    @classmethod
    def search_space(cls, trial: SearchTrial) -> dict[str, Any]:
        return {"C": trial.suggest_float("C", 1e-3, 10.0, log=True)}


class EmptySpaceTrainer(LogisticTestTrainer):
    """TEST TRAINER declaring no search parameters (bad input for the search)."""

    name: ClassVar[str] = "test-empty-space"

    @classmethod
    def search_space(cls, trial: SearchTrial) -> dict[str, Any]:
        return {}


TEST_TRAINERS: dict[str, type[Trainer]] = {t.name: t for t in (LogisticTestTrainer, EmptySpaceTrainer)}


def kit_trainers(name: str) -> type[Trainer]:
    """The trainer resolver the tests hand to the registry loader."""
    return TEST_TRAINERS[name]


def synthetic_dataset(
    n: int = 600, *, seed: int = 1, shift: float = 0.0, feature_names: tuple[str, ...] = FEATURES
) -> Dataset:
    """Hourly rows; label "up" when 1.5*f0 - f1 (+ noise) > shift; each label window lasts 3 hours."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(n, len(feature_names)))
    labels = (1.5 * features[:, 0] - features[:, 1] + rng.normal(scale=0.8, size=n) > shift).astype(np.int64)
    start = np.datetime64("2026-01-01T00:00:00", "us") + np.arange(n) * np.timedelta64(3600, "s")
    spec = DatasetSpec(
        venue="paper",
        symbol="BTC/USD",
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 1, 1, tzinfo=UTC),
        feature_set=feature_names,
        label={"method": "synthetic", "seed": seed, "n": n, "shift": shift},
    )
    return Dataset(
        spec=spec,
        version=f"synthetic-{seed}-{n}-{shift}",
        features=features,
        feature_names=feature_names,
        labels=labels,
        classes=CLASSES,
        event_start=start.astype("datetime64[us]"),
        event_end=(start + np.timedelta64(3 * 3600, "s")).astype("datetime64[us]"),
        weights=np.ones(n, dtype=np.float64),
    )
