"""Build a `Dataset` from the feature table (`marketdata.features`, migration 0031): features of each bar joined
with a label decided by the mids of the following bars only.

Row i is bar i of the stored series. Its features are known when the bar closes (`event_start` = bar_start +
BAR_SECONDS); its label is decided at the close of the bar that ends its window (`event_end`). Labels use the
stored `mid` of each bar (the price the features are computed from); horizons count stored bars. A row with any
feature of the set missing (NULL: not enough history yet) is dropped after labelling, as is a row whose label
window runs past the end of the range.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from data.features.definitions import BAR_SECONDS, FEATURES
from data.features.store import features as features_table
from ml.datasets import Dataset, DatasetSpec
from ml.datasets.labels import UNLABELLED, LabelError, average_uniqueness, make_labels

PRICE = "mid"
DEFAULT_MIN_SAMPLES = 50


class DatasetError(ValueError):
    """A dataset that cannot be built as asked (unknown feature, too few rows, bad label parameters)."""


def spec_json(spec: DatasetSpec) -> str:
    """The canonical JSON of a spec (sorted keys, UTC ISO times): what the version hashes."""
    for name, value in (("start", spec.start), ("end", spec.end)):
        if value.tzinfo is None:
            raise DatasetError(f"spec.{name} must be timezone-aware, got {value.isoformat()}")
    try:
        return _canonical(spec)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"spec.label must be JSON (strings, numbers, booleans): {exc}") from None


def _canonical(spec: DatasetSpec) -> str:
    return json.dumps(
        {
            "venue": spec.venue,
            "symbol": spec.symbol,
            "start": spec.start.astimezone(UTC).isoformat(),
            "end": spec.end.astimezone(UTC).isoformat(),
            "feature_set": list(spec.feature_set),
            "label": spec.label,
            "bar_seconds": BAR_SECONDS,
        },
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,
    )


def check_spec(spec: DatasetSpec) -> None:
    """DatasetError naming what is wrong with `spec` before anything is read."""
    if not spec.feature_set:
        raise DatasetError("spec.feature_set is empty")
    missing = [name for name in spec.feature_set if name not in FEATURES]
    if missing:
        raise DatasetError(
            f"feature {missing[0]!r} is not in the store (marketdata.features has: {', '.join(FEATURES)})"
        )
    if len(set(spec.feature_set)) != len(spec.feature_set):
        raise DatasetError("spec.feature_set names a feature twice")
    if spec.end <= spec.start:
        raise DatasetError("spec.end must be after spec.start")
    spec_json(spec)


def from_bars(
    spec: DatasetSpec,
    bar_start: npt.NDArray[np.datetime64],
    price: npt.NDArray[np.float64],
    features: npt.NDArray[np.float64],
    *,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> Dataset:
    """The dataset of stored bars (in time order): labels from `price`, rows with a missing feature dropped."""
    check_spec(spec)
    bar_start = bar_start.astype("datetime64[us]")
    price = np.asarray(price, dtype=np.float64)
    features = np.asarray(features, dtype=np.float64)
    if len(price) == 0:
        features = features.reshape(0, len(spec.feature_set))
    if bar_start.shape != price.shape or features.shape != (len(price), len(spec.feature_set)):
        raise DatasetError(
            f"bars do not line up: {bar_start.shape[0]} times, {price.shape[0]} prices, features {features.shape} "
            f"(expected ({len(price)}, {len(spec.feature_set)}))"
        )
    if bar_start.shape[0] > 1 and not bool(np.all(np.diff(bar_start.astype(np.int64)) > 0)):
        raise DatasetError("bars must be in strictly increasing time order")
    valid_price = np.isfinite(price) & (price > 0)
    bar_start, price, features = bar_start[valid_price], price[valid_price], features[valid_price]
    try:
        labelled = make_labels(price, dict(spec.label))
    except LabelError as exc:
        raise DatasetError(str(exc)) from None
    keep = (labelled.labels != UNLABELLED) & np.all(np.isfinite(features), axis=1)
    rows = np.flatnonzero(keep)
    if rows.shape[0] < min_samples:
        raise DatasetError(
            f"too few samples for {spec.venue} {spec.symbol} {spec.start.isoformat()} .. {spec.end.isoformat()}: "
            f"{rows.shape[0]} labelled rows with every feature present (of {len(price)} bars), need at least {min_samples}"
        )
    ends = labelled.end[rows]
    close = np.timedelta64(BAR_SECONDS, "s").astype("timedelta64[us]")
    digest = hashlib.sha256(spec_json(spec).encode())
    for part in (bar_start.astype(np.int64), price, features):
        digest.update(np.ascontiguousarray(part).tobytes())
    return Dataset(
        spec=spec,
        version=digest.hexdigest()[:32],
        features=np.ascontiguousarray(features[rows]),
        feature_names=tuple(spec.feature_set),
        labels=labelled.labels[rows],
        classes=labelled.classes,
        event_start=bar_start[rows] + close,
        event_end=bar_start[ends] + close,
        weights=average_uniqueness(rows.astype(np.int64), ends, len(price)),
    )


async def build(session: AsyncSession, spec: DatasetSpec, *, min_samples: int = DEFAULT_MIN_SAMPLES) -> Dataset:
    """The dataset of `spec` from the stored feature rows of [start, end) (same spec, same store: same version)."""
    check_spec(spec)
    columns = [features_table.c[name] for name in spec.feature_set]
    statement = (
        sa.select(features_table.c.bar_start, features_table.c[PRICE], *columns)
        .where(
            features_table.c.venue == spec.venue,
            features_table.c.instrument == spec.symbol,
            features_table.c.bar_seconds == BAR_SECONDS,
            features_table.c.bar_start >= spec.start,
            features_table.c.bar_start < spec.end,
        )
        .order_by(features_table.c.bar_start)
    )
    rows = (await session.execute(statement)).all()
    return from_bars(
        spec,
        np.array([_naive_utc(row[0]) for row in rows], dtype="datetime64[us]"),
        np.array([_float(row[1]) for row in rows], dtype=np.float64),
        np.array([[_float(value) for value in row[2:]] for row in rows], dtype=np.float64),
        min_samples=min_samples,
    )


def _naive_utc(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(tzinfo=None)


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)
