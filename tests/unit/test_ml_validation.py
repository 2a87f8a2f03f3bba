"""Purged walk-forward validation (no training label window overlaps a test fold's), the leak it catches, metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt
import pytest

from ml import metrics
from ml.datasets import DatasetSpec
from ml.datasets.build import from_bars
from ml.trainers import create
from ml.trainers.base import Trainer
from ml.validation import FoldError, cross_validate, naive_kfold, purged_walk_forward

T0 = np.datetime64("2026-01-01T00:00:00", "us")
MINUTE = np.timedelta64(60_000_000, "us")


def _windows(seed: int, n: int) -> tuple[npt.NDArray[np.datetime64], npt.NDArray[np.datetime64]]:
    rng = np.random.default_rng(seed)
    start = T0 + np.arange(n) * MINUTE
    return start, start + rng.integers(1, 40, n) * MINUTE


@pytest.mark.parametrize("walk_forward", [True, False])
@pytest.mark.parametrize("seed", range(5))
def test_no_training_label_window_overlaps_a_test_fold_or_its_embargo(seed: int, walk_forward: bool) -> None:
    start, end = _windows(seed, 400)
    embargo = timedelta(minutes=7)
    folds = purged_walk_forward(start, end, 4, embargo, walk_forward=walk_forward)
    assert len(folds) == 4
    for fold in folds:
        span_start, span_end = start[fold.test].min(), end[fold.test].max()
        train_start, train_end = start[fold.train], end[fold.train]
        assert not ((train_start <= span_end) & (train_end >= span_start)).any()
        assert not ((train_start > span_end) & (train_start <= span_end + np.timedelta64(embargo))).any()
        assert np.intersect1d(fold.train, fold.test).size == 0
        if walk_forward:
            assert fold.train.max() < fold.test.min()
    assert np.concatenate([fold.test for fold in folds]).tolist() == sorted(
        np.concatenate([fold.test for fold in folds]).tolist()
    )


def test_purging_removes_exactly_the_overlapping_rows() -> None:
    start = T0 + np.arange(12) * MINUTE
    end = start + 3 * MINUTE  # each label is decided 3 bars later
    first = purged_walk_forward(start, end, 2)[0]  # blocks of 4: test rows 4..7
    assert first.test.tolist() == [4, 5, 6, 7]
    assert first.train.tolist() == [0]  # rows 1..3 end at or after row 4 starts
    both_sides = purged_walk_forward(start, end, 3, walk_forward=False)[1]
    assert both_sides.test.tolist() == [4, 5, 6, 7]
    # before: rows 1..3 end within the test span; after: rows 8..10 start within it (it ends at minute 10)
    assert both_sides.train.tolist() == [0, 11]
    embargoed = purged_walk_forward(start, end, 3, timedelta(minutes=1), walk_forward=False)[1]
    assert embargoed.train.tolist() == [0]  # row 11 starts 1 minute after the span: inside the embargo


def test_too_few_samples_and_bad_folds_are_clear_errors() -> None:
    start, end = _windows(0, 9)
    with pytest.raises(FoldError, match="too few samples for 5 folds: 9 rows"):
        purged_walk_forward(start, end, 5)
    with pytest.raises(FoldError, match="n_splits"):
        purged_walk_forward(start, end, 1)
    long_start = T0 + np.arange(30) * MINUTE
    with pytest.raises(FoldError, match="no training rows left after purging"):
        purged_walk_forward(long_start, long_start + 100 * MINUTE, 3)
    with pytest.raises(FoldError, match="event_end is before event_start at row 0"):
        purged_walk_forward(start, start - MINUTE, 2)
    with pytest.raises(FoldError, match="too few samples"):
        naive_kfold(5, 5)


def test_naive_kfold_partitions_the_rows() -> None:
    folds = naive_kfold(103, 5, seed=1)
    tests = np.concatenate([fold.test for fold in folds])
    assert sorted(tests.tolist()) == list(range(103))
    assert all(np.union1d(f.train, f.test).size == 103 for f in folds)
    assert not all(np.all(np.diff(f.test) == 1) for f in folds)  # shuffled, not contiguous


def test_a_leaky_feature_scores_far_better_under_naive_kfold_than_under_the_purged_split() -> None:
    """Labels over the next 30 bars overlap their neighbours'. The leaky feature is the next bar's price (the next
    bar's return folded into the level), next to a slow 200-bar average: together they say *when* a row is, so a
    model trained on shuffled folds reads a test row's label off its neighbours'. Purged walk-forward validation
    leaves no neighbour whose label window overlaps the test fold, and the score falls to about chance."""
    rng = np.random.default_rng(5)
    n, horizon = 2000, 30
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    leaky = np.column_stack([np.append(price[1:], np.nan), np.convolve(price, np.ones(200) / 200, "full")[:n]])
    spec = DatasetSpec("synthetic", "LEAK/USD", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 3, tzinfo=UTC),
                       ("mid", "vwap"), {"method": "forward_return", "horizon": horizon})  # fmt: skip
    data = from_bars(spec, T0 + np.arange(n) * MINUTE, price, leaky)

    def make() -> Trainer:
        return create(
            "lightgbm", {"num_boost_round": 30, "num_threads": 1, "min_data_in_leaf": 5}, classes=data.classes
        )

    naive = cross_validate(make, data.features, data.labels, naive_kfold(len(data), 5))
    purged_folds = purged_walk_forward(data.event_start, data.event_end, 5, timedelta(minutes=horizon))
    purged = cross_validate(make, data.features, data.labels, purged_folds)
    naive_auc = float(np.mean([score["auc"] for score in naive]))
    purged_auc = float(np.mean([score["auc"] for score in purged]))
    assert naive_auc > 0.85
    assert purged_auc < 0.65
    assert naive_auc - purged_auc > 0.25


def test_metrics_by_hand() -> None:
    y = np.array([0, 1, 1, 0])
    proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.5, 0.5]])
    assert metrics.log_loss(y, proba) == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.4, 0.5])))
    assert metrics.hit_rate(y, proba) == 0.75  # row 3's tie goes to class 0, the true one
    assert metrics.auc(y, proba) == 0.75  # positives 0.8, 0.4 against negatives 0.1, 0.5: 3 of 4 pairs ordered
    assert metrics.auc(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]])) == 0.5  # ties count half
    assert metrics.brier(y, proba) == pytest.approx(np.mean([0.02, 0.08, 0.72, 0.5]))
    bins = metrics.reliability(y, proba)  # top-class confidences 0.9, 0.8, 0.6, 0.5: one per bin
    assert [(b.low, b.count, b.mean_predicted, b.observed) for b in bins] == [
        (0.5, 1, 0.5, 1.0),
        (0.6, 1, 0.6, 0.0),
        (0.8, 1, 0.8, 1.0),
        (0.9, 1, 0.9, 1.0),
    ]
    assert metrics.calibration_error(y, proba) == pytest.approx((0.5 + 0.6 + 0.2 + 0.1) / 4)
    three = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8]])
    assert metrics.auc(np.array([0, 1, 2]), three) == 1.0
    with pytest.raises(metrics.MetricError, match="class indices"):
        metrics.log_loss(np.array([0, 2]), proba[:2])
    with pytest.raises(metrics.MetricError, match="proba must be"):
        metrics.hit_rate(y, proba[:3])
