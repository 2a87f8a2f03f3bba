"""Labels from a price series and sample weights by label uniqueness (López de Prado, AFML ch. 3 and 4).

Prices are one per bar, in time order; a label of bar i is decided by the prices of bars i+1 .. end[i] only, so
`end[i]` (an index into the same series) is where its label window closes. Rows that cannot be labelled (too close
to the end of the series, no volatility yet) get label -1 and are dropped by the dataset builder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

UNLABELLED = -1
BINARY = ("down", "up")
TERNARY = ("down", "flat", "up")


class LabelError(ValueError):
    """Label parameters that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Labels:
    """Class index per bar (UNLABELLED where none) and the index of the bar that closes each label window."""

    labels: npt.NDArray[np.int64]
    end: npt.NDArray[np.int64]
    classes: tuple[str, ...]


def _positive_int(params: dict[str, Any], name: str, default: int | None = None) -> int:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LabelError(f"label.{name} must be a positive integer, got {value!r}")
    return value


def _non_negative(params: dict[str, Any], name: str, default: float) -> float:
    value = params.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value) or value < 0:
        raise LabelError(f"label.{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def forward_return(close: npt.NDArray[np.float64], horizon: int, threshold: float = 0.0) -> Labels:
    """Class of the simple return over the next `horizon` bars: up/down (threshold 0) or down/flat/up (|r| <= threshold
    is flat)."""
    n = close.shape[0]
    labels = np.full(n, UNLABELLED, dtype=np.int64)
    end = np.arange(n, dtype=np.int64) + horizon
    if n > horizon:
        ret = close[horizon:] / close[:-horizon] - 1.0
        if threshold > 0:
            labels[: n - horizon] = np.where(ret > threshold, 2, np.where(ret < -threshold, 0, 1))
        else:
            labels[: n - horizon] = (ret > 0).astype(np.int64)
    return Labels(labels, np.minimum(end, n - 1), TERNARY if threshold > 0 else BINARY)


def rolling_volatility(close: npt.NDArray[np.float64], window: int) -> npt.NDArray[np.float64]:
    """Standard deviation of the last `window` log returns ending at each bar (NaN until `window` returns exist)."""
    n = close.shape[0]
    vol = np.full(n, np.nan)
    if n > window:
        returns = np.diff(np.log(close))
        windows = np.lib.stride_tricks.sliding_window_view(returns, window)
        vol[window:] = windows.std(axis=1, ddof=1)
    return vol


def triple_barrier(
    close: npt.NDArray[np.float64], horizon: int, profit_take: float, stop_loss: float, vol_window: int
) -> Labels:
    """The first barrier touched after bar i: up at close_i * (1 + profit_take * vol_i), down at
    close_i * (1 - stop_loss * vol_i), flat at the time limit i + horizon (vol_i: `rolling_volatility`)."""
    n = close.shape[0]
    vol = rolling_volatility(close, vol_window)
    labels = np.full(n, UNLABELLED, dtype=np.int64)
    end = np.minimum(np.arange(n, dtype=np.int64) + horizon, n - 1)
    usable = np.zeros(n, dtype=bool)
    usable[: max(n - horizon, 0)] = True
    usable &= np.isfinite(vol) & (vol > 0)
    upper = close * (1 + profit_take * np.nan_to_num(vol))
    lower = close * (1 - stop_loss * np.nan_to_num(vol))
    open_ = usable.copy()
    labels[usable] = 1
    for step in range(1, horizon + 1):
        ahead = np.full(n, np.nan)
        ahead[: n - step] = close[step:]
        hit_up = open_ & (ahead >= upper) & (profit_take > 0)
        hit_down = open_ & (ahead <= lower) & (stop_loss > 0) & ~hit_up
        labels[hit_up] = 2
        labels[hit_down] = 0
        end[hit_up | hit_down] = np.arange(n)[hit_up | hit_down] + step
        open_ &= ~(hit_up | hit_down)
    return Labels(labels, end, TERNARY)


def make_labels(close: npt.NDArray[np.float64], params: dict[str, Any]) -> Labels:
    """Labels by the method named in `params["method"]` ("forward_return" or "triple_barrier") and its parameters."""
    method = params.get("method", "forward_return")
    known = {"forward_return": {"method", "horizon", "threshold"},
             "triple_barrier": {"method", "horizon", "profit_take", "stop_loss", "vol_window"}}  # fmt: skip
    if method not in known:
        raise LabelError(f"label.method must be one of {sorted(known)}, got {method!r}")
    unknown = sorted(set(params) - known[method])
    if unknown:
        raise LabelError(f"label.{unknown[0]} is not a parameter of {method} (it takes {sorted(known[method])})")
    horizon = _positive_int(params, "horizon", 5)
    if method == "forward_return":
        return forward_return(close, horizon, _non_negative(params, "threshold", 0.0))
    profit_take = _non_negative(params, "profit_take", 2.0)
    stop_loss = _non_negative(params, "stop_loss", 2.0)
    if profit_take == 0 and stop_loss == 0:
        raise LabelError("label.profit_take and label.stop_loss are both 0: no barrier but the time limit")
    return triple_barrier(close, horizon, profit_take, stop_loss, _positive_int(params, "vol_window", 20))


def average_uniqueness(
    start: npt.NDArray[np.int64], end: npt.NDArray[np.int64], n_bars: int
) -> npt.NDArray[np.float64]:
    """Per label, the mean over the bars its window covers (start+1 .. end) of 1 / the number of labels covering that
    bar (AFML 4.2): 1 for a label that shares no bar, 1/k for k labels over the same bars."""
    delta = np.zeros(n_bars + 1, dtype=np.int64)
    np.add.at(delta, start + 1, 1)
    np.add.at(delta, end + 1, -1)
    concurrency = np.cumsum(delta)[:n_bars]
    inverse = np.zeros(n_bars + 1)
    covered = concurrency > 0
    inverse[1:][covered] = 1.0 / concurrency[covered]
    cumulative = np.cumsum(inverse)
    length = end - start
    return (cumulative[end + 1] - cumulative[start + 1]) / length
