"""Datasets: features joined with labels without leakage, versioned by what they were built from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class DatasetSpec:
    """What a dataset is built from; its hash is the dataset's version (same spec, same store: same rows)."""

    venue: str
    symbol: str
    start: datetime
    end: datetime
    feature_set: tuple[str, ...]
    label: dict[str, Any] = field(default_factory=dict)  # the labelling method and its parameters


@dataclass(frozen=True)
class Dataset:
    """Rows in time order: row i's features are known at `event_start[i]`; its label is decided by `event_end[i]`
    (the end of its label window, what purged validation needs)."""

    spec: DatasetSpec
    version: str
    features: npt.NDArray[np.float64]  # (n, len(feature_names))
    feature_names: tuple[str, ...]
    labels: npt.NDArray[np.int64]  # (n,), class indices into `classes`
    classes: tuple[str, ...]
    event_start: npt.NDArray[np.datetime64]  # (n,), datetime64[us]
    event_end: npt.NDArray[np.datetime64]  # (n,), datetime64[us]
    weights: npt.NDArray[np.float64]  # (n,), sample weights by label uniqueness

    def __len__(self) -> int:
        return int(self.labels.shape[0])
