"""Classification metrics of predicted probabilities: log loss, AUC, hit rate, Brier score and reliability bins.

`y` holds class indices (n,), `proba` the (n, n_classes) probabilities a trainer's `predict_proba` returns.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

EPS = 1e-15


class MetricError(ValueError):
    """Labels and probabilities that do not fit together."""


def _check(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> None:
    if proba.ndim != 2 or proba.shape[0] != y.shape[0]:
        raise MetricError(f"proba must be (n, n_classes) with n = {y.shape[0]}, got {proba.shape}")
    if y.shape[0] == 0:
        raise MetricError("no rows to score")
    if int(y.min()) < 0 or int(y.max()) >= proba.shape[1]:
        raise MetricError(
            f"labels must be class indices in [0, {proba.shape[1]}), got [{int(y.min())}, {int(y.max())}]"
        )


def log_loss(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> float:
    """Mean negative log probability of the true class (probabilities clipped to [1e-15, 1])."""
    _check(y, proba)
    return float(-np.mean(np.log(np.clip(proba[np.arange(y.shape[0]), y], EPS, 1.0))))


def _ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, ties given their average rank."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    upper = np.cumsum(counts)
    return ((upper - counts + 1 + upper) / 2.0)[inverse]


def binary_auc(positive: npt.NDArray[np.bool_], score: npt.NDArray[np.float64]) -> float:
    """Area under the ROC curve (Mann-Whitney U); NaN when one class is absent."""
    n_pos = int(positive.sum())
    n_neg = positive.shape[0] - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def auc(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> float:
    """ROC AUC: of the last class's probability for two classes, else the mean one-vs-rest AUC over the classes
    present."""
    _check(y, proba)
    if proba.shape[1] == 2:
        return binary_auc(y == 1, proba[:, 1])
    values = [binary_auc(y == k, proba[:, k]) for k in range(proba.shape[1])]
    present = [value for value in values if not np.isnan(value)]
    return float(np.mean(present)) if present else float("nan")


def hit_rate(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> float:
    """Share of rows whose most probable class is the true one."""
    _check(y, proba)
    return float(np.mean(np.argmax(proba, axis=1) == y))


def brier(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> float:
    """Multi-class Brier score: mean over rows of the squared distance to the one-hot truth (0 is perfect)."""
    _check(y, proba)
    truth = np.zeros_like(proba)
    truth[np.arange(y.shape[0]), y] = 1.0
    return float(np.mean(np.sum((proba - truth) ** 2, axis=1)))


@dataclass(frozen=True)
class ReliabilityBin:
    """Rows whose predicted probability fell in [low, high): their mean prediction and how often it came true."""

    low: float
    high: float
    count: int
    mean_predicted: float
    observed: float


def reliability(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], bins: int = 10) -> list[ReliabilityBin]:
    """Calibration of the top-class probability: equal-width bins over [0, 1], empty bins left out."""
    _check(y, proba)
    confidence = proba.max(axis=1)
    correct = np.argmax(proba, axis=1) == y
    index = np.minimum((confidence * bins).astype(np.int64), bins - 1)
    result = []
    for b in range(bins):
        member = index == b
        count = int(member.sum())
        if count:
            result.append(
                ReliabilityBin(
                    b / bins, (b + 1) / bins, count, float(confidence[member].mean()), float(correct[member].mean())
                )
            )
    return result


def calibration_error(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64], bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |mean predicted - observed| over the reliability bins."""
    table = reliability(y, proba, bins)
    total = sum(entry.count for entry in table)
    return float(sum(entry.count * abs(entry.mean_predicted - entry.observed) for entry in table) / total)


def summary(y: npt.NDArray[np.int64], proba: npt.NDArray[np.float64]) -> dict[str, float]:
    """log_loss, auc, hit_rate, brier and calibration_error of one prediction."""
    return {
        "log_loss": log_loss(y, proba),
        "auc": auc(y, proba),
        "hit_rate": hit_rate(y, proba),
        "brier": brier(y, proba),
        "calibration_error": calibration_error(y, proba),
    }
