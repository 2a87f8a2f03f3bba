"""Purged walk-forward cross-validation with an embargo (López de Prado, AFML ch. 7), and the naive k-fold it fixes.

A training row is purged when its label window [event_start, event_end] overlaps the test fold's span
[first event_start, last event_end]; rows whose event_start falls within `embargo` after the test fold's span are
dropped too (their features may still carry the test period through rolling windows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import numpy.typing as npt

from ml import metrics
from ml.trainers.base import Trainer


class FoldError(ValueError):
    """A split that cannot be made (too few rows for the folds, a fold left without training rows)."""


@dataclass(frozen=True)
class Fold:
    """Row indices (in time order) to train on and to test on."""

    train: npt.NDArray[np.int64]
    test: npt.NDArray[np.int64]


def _check_rows(n: int, n_splits: int, groups: int) -> None:
    if isinstance(n_splits, bool) or not isinstance(n_splits, int) or n_splits < 2:
        raise FoldError(f"n_splits must be an integer >= 2, got {n_splits!r}")
    if n < groups * 2:
        raise FoldError(f"too few samples for {n_splits} folds: {n} rows, need at least {groups * 2}")


def purged_walk_forward(
    event_start: npt.NDArray[np.datetime64],
    event_end: npt.NDArray[np.datetime64],
    n_splits: int = 5,
    embargo: timedelta = timedelta(0),
    *,
    walk_forward: bool = True,
) -> list[Fold]:
    """Folds over rows in time order: the rows split into n_splits + 1 contiguous blocks, fold k tests block k and
    trains on the blocks before it (walk_forward) or on every other block (purged k-fold); purged and embargoed."""
    start = event_start.astype("datetime64[us]").astype(np.int64)
    end = event_end.astype("datetime64[us]").astype(np.int64)
    n = start.shape[0]
    if end.shape[0] != n:
        raise FoldError(f"event_start has {n} rows but event_end has {end.shape[0]}")
    if bool(np.any(end < start)):
        raise FoldError(f"event_end is before event_start at row {int(np.flatnonzero(end < start)[0])}")
    groups = n_splits + 1 if walk_forward else n_splits
    _check_rows(n, n_splits, groups)
    embargo_us = embargo // timedelta(microseconds=1)
    if embargo_us < 0:
        raise FoldError(f"embargo must be >= 0, got {embargo}")
    blocks = np.array_split(np.arange(n, dtype=np.int64), groups)
    folds: list[Fold] = []
    for k in range(1 if walk_forward else 0, groups):
        test = blocks[k]
        span_start, span_end = int(start[test].min()), int(end[test].max())
        candidates = np.concatenate(blocks[:k] if walk_forward else [b for i, b in enumerate(blocks) if i != k])
        overlaps = (start[candidates] <= span_end) & (end[candidates] >= span_start)
        embargoed = (start[candidates] > span_end) & (start[candidates] <= span_end + embargo_us)
        train = candidates[~overlaps & ~embargoed]
        if train.shape[0] == 0:
            raise FoldError(
                f"fold {len(folds)} has no training rows left after purging: too few samples for {n_splits} folds"
            )
        folds.append(Fold(train, test))
    return folds


def naive_kfold(n: int, n_splits: int = 5, *, seed: int = 0, shuffle: bool = True) -> list[Fold]:
    """The textbook k-fold (rows shuffled, no purge, no embargo): what purged validation is compared with."""
    _check_rows(n, n_splits, n_splits)
    order = np.random.default_rng(seed).permutation(n) if shuffle else np.arange(n)
    folds: list[Fold] = []
    for test in np.array_split(order.astype(np.int64), n_splits):
        mask = np.ones(n, dtype=bool)
        mask[test] = False
        folds.append(Fold(np.flatnonzero(mask).astype(np.int64), np.sort(test)))
    return folds


def cross_validate(
    make: Callable[[], Trainer],
    features: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    folds: list[Fold],
    weights: npt.NDArray[np.float64] | None = None,
) -> list[dict[str, float]]:
    """Per fold, a fresh trainer from `make` fitted on the training rows and scored (ml.metrics.summary) on the test
    rows."""
    scores = []
    for fold in folds:
        model = make()
        model.fit(features[fold.train], labels[fold.train], None if weights is None else weights[fold.train])
        scores.append(metrics.summary(labels[fold.test], model.predict_proba(features[fold.test])))
    return scores
