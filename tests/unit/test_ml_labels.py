"""Labels, uniqueness weights and the dataset builder, checked by hand on tiny series."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from ml.datasets import DatasetSpec
from ml.datasets.build import DatasetError, from_bars
from ml.datasets.labels import (
    UNLABELLED,
    LabelError,
    average_uniqueness,
    forward_return,
    make_labels,
    rolling_volatility,
    triple_barrier,
)

CLOSE = np.array([100.0, 101.0, 102.0, 101.0, 99.0, 98.0, 100.0, 103.0])
T0 = np.datetime64("2026-01-01T00:00:00", "us")


def _spec(features: tuple[str, ...] = ("ofi", "rv_5"), label: dict[str, object] | None = None) -> DatasetSpec:
    return DatasetSpec("synthetic", "X/USD", datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC),
                       features, {"method": "forward_return", "horizon": 2} if label is None else label)  # fmt: skip


def test_forward_return_classes_and_windows_by_hand() -> None:
    binary = forward_return(CLOSE, 2)
    # r[i] = close[i+2] / close[i] - 1: +2 %, 0, -2.9 %, -3 %, +1 %, +5.1 %, then no label
    assert binary.labels.tolist() == [1, 0, 0, 0, 1, 1, UNLABELLED, UNLABELLED]
    assert binary.end[:6].tolist() == [2, 3, 4, 5, 6, 7]
    assert binary.classes == ("down", "up")
    ternary = forward_return(CLOSE, 2, threshold=0.015)
    assert ternary.labels[:6].tolist() == [2, 1, 0, 0, 1, 2]
    assert ternary.classes == ("down", "flat", "up")


def test_triple_barrier_first_touch_and_time_limit_by_hand() -> None:
    vol = rolling_volatility(CLOSE, 2)
    assert np.isnan(vol[:2]).all()
    assert vol[3] == pytest.approx(np.std(np.diff(np.log(CLOSE[1:4])), ddof=1))
    result = triple_barrier(CLOSE, horizon=3, profit_take=1.0, stop_loss=1.0, vol_window=2)
    # bar 2 (102, vol 7e-5): next close 101 is under the lower barrier -> down at bar 3
    # bar 3 (101, vol 1.4 %): barriers 102.4 / 99.6; 99 at bar 4 -> down at bar 4
    # bar 4 (99, vol 0.72 %): barriers 99.7 / 98.3; 98 at bar 5 -> down at bar 5
    assert result.labels.tolist()[:5] == [UNLABELLED, UNLABELLED, 0, 0, 0]
    assert result.end[2:5].tolist() == [3, 4, 5]
    flat = triple_barrier(np.array([100.0, 101.0, 100.0, 100.0, 100.0, 100.0, 100.0]), 3, 5.0, 5.0, 2)
    assert flat.labels[2:4].tolist() == [1, 1]  # no barrier within 3 bars: the time limit, flat
    assert flat.end[2:4].tolist() == [5, 6]


def test_average_uniqueness_by_hand() -> None:
    # windows cover bars {1,2}, {2,3}, {3,4}: concurrency 1, 2, 2, 1
    weights = average_uniqueness(np.array([0, 1, 2]), np.array([2, 3, 4]), 5)
    assert weights.tolist() == [0.75, 0.5, 0.75]
    assert average_uniqueness(np.array([0, 3]), np.array([2, 5]), 6).tolist() == [1.0, 1.0]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"method": "oracle"}, "label.method"),
        ({"method": "forward_return", "horizon": 0}, "label.horizon"),
        ({"method": "forward_return", "threshold": -1}, "label.threshold"),
        ({"method": "forward_return", "profit_take": 1}, "label.profit_take"),
        ({"method": "triple_barrier", "profit_take": 0, "stop_loss": 0}, "label.profit_take"),
        ({"method": "triple_barrier", "vol_window": 1.5}, "label.vol_window"),
    ],
)
def test_bad_label_parameters_name_the_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(LabelError, match=field):
        make_labels(CLOSE, params)


def _bars(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[type-arg]
    rng = np.random.default_rng(3)
    price = 100 * np.exp(np.cumsum(rng.normal(0, 0.001, n)))
    return T0 + np.arange(n) * np.timedelta64(60, "s"), price, rng.normal(size=(n, 2))


def test_dataset_rows_drop_missing_features_and_carry_label_windows() -> None:
    bars, price, features = _bars(80)
    features[5, 1] = np.nan
    data = from_bars(_spec(), bars, price, features, min_samples=10)
    assert len(data) == 80 - 2 - 1  # the last 2 bars have no label window, bar 5 misses a feature
    assert 5 not in ((data.event_start - bars[0]) // np.timedelta64(60, "s") - 1).tolist()
    minute = np.timedelta64(60, "s")
    assert ((data.event_start - bars[0]) % minute == np.timedelta64(0)).all()
    assert (data.event_end - data.event_start == 2 * minute).all()  # known at the bar's close, decided 2 bars later
    assert data.feature_names == ("ofi", "rv_5")
    assert data.weights.max() <= 1.0
    assert data.weights.min() > 0


def test_version_is_stable_and_changes_with_spec_or_rows() -> None:
    bars, price, features = _bars(80)
    first = from_bars(_spec(), bars, price, features, min_samples=10)
    assert first.version == from_bars(_spec(), bars, price, features.copy(), min_samples=10).version
    other_label = _spec(label={"method": "forward_return", "horizon": 3})
    assert from_bars(other_label, bars, price, features, min_samples=10).version != first.version
    changed = features.copy()
    changed[40, 0] += 1e-9
    assert from_bars(_spec(), bars, price, changed, min_samples=10).version != first.version


def test_bad_specs_name_what_is_wrong() -> None:
    bars, price, features = _bars(80)
    with pytest.raises(DatasetError, match="feature 'alpha' is not in the store"):
        from_bars(_spec(("ofi", "alpha")), bars, price, features)
    with pytest.raises(DatasetError, match=r"too few samples .* 78 labelled rows .* need at least 100"):
        from_bars(_spec(), bars, price, features, min_samples=100)
    with pytest.raises(DatasetError, match=r"label\.horizon"):
        from_bars(_spec(label={"method": "forward_return", "horizon": -2}), bars, price, features)
    with pytest.raises(DatasetError, match=r"spec\.label must be JSON"):
        from_bars(_spec(label={"method": "forward_return", "threshold": float("nan")}), bars, price, features)
    with pytest.raises(DatasetError, match="bars do not line up"):
        from_bars(_spec(), bars, price, features[:, :1])
    with pytest.raises(DatasetError, match="time order"):
        from_bars(_spec(), bars[::-1], price, features)
