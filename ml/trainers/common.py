"""What every trainer shares: input checks and the metadata file written next to the model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

METADATA = "metadata.json"


class TrainerError(ValueError):
    """Input a trainer cannot use (shape, labels, weights, parameters); the message names it."""


class ModelFormatError(ValueError):
    """Model files that are missing, from another trainer or from another format version."""


def check_fit(
    features: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    weights: npt.NDArray[np.float64] | None,
    classes: tuple[str, ...] | None,
) -> tuple[str, ...]:
    """The classes of a fit (given, or "0".."k-1" from the labels); TrainerError naming the bad input."""
    if features.ndim != 2 or features.shape[0] == 0 or features.shape[1] == 0:
        raise TrainerError(f"features must be a non-empty (n, n_features) matrix, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise TrainerError(f"labels must have shape ({features.shape[0]},), got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TrainerError(f"labels must be integer class indices, got dtype {labels.dtype}")
    if int(labels.min()) < 0:
        raise TrainerError(f"labels must be class indices >= 0, got {int(labels.min())}")
    found = tuple(str(k) for k in range(int(labels.max()) + 1))
    result = classes if classes is not None else found
    if len(result) < 2:
        raise TrainerError(f"labels need at least 2 classes, got {len(result)}")
    if int(labels.max()) >= len(result):
        raise TrainerError(f"label {int(labels.max())} is not a class index of {result}")
    if weights is not None and (
        weights.shape != labels.shape or not bool(np.all(np.isfinite(weights) & (weights >= 0)))
    ):
        raise TrainerError(f"weights must be {labels.shape[0]} finite values >= 0")
    if np.isinf(features).any():
        raise TrainerError("features contain an infinite value (NaN is allowed as missing)")
    return result


def mean_one(weights: npt.NDArray[np.float64] | None) -> npt.NDArray[np.float64] | None:
    """Weights rescaled to average 1 (uniqueness weights average well below 1; the libraries' leaf-size limits such
    as XGBoost's `min_child_weight` count weight, so they keep their meaning); TrainerError when they sum to 0."""
    if weights is None:
        return None
    total = float(weights.sum())
    if total <= 0:
        raise TrainerError("weights sum to 0: no row would count")
    scaled: npt.NDArray[np.float64] = weights * (weights.shape[0] / total)
    return scaled


def merged_params(trainer: str, defaults: dict[str, Any], params: dict[str, Any] | None) -> dict[str, Any]:
    """The trainer's defaults overridden by `params`; TrainerError naming a parameter the trainer does not take."""
    unknown = sorted(set(params or {}) - set(defaults))
    if unknown:
        raise TrainerError(f"{trainer} parameter {unknown[0]!r} is not one of {sorted(defaults)}")
    return {**defaults, **(params or {})}


def check_predict(features: npt.NDArray[np.float64], n_features: int | None) -> None:
    """TrainerError when predicting before fit or on a matrix of another width."""
    if n_features is None:
        raise TrainerError("the model is not fitted: call fit or load first")
    if features.ndim != 2 or features.shape[1] != n_features:
        raise TrainerError(f"features must have shape (n, {n_features}), got {features.shape}")


def write_metadata(directory: Path, metadata: dict[str, Any]) -> None:
    """Write metadata.json in `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / METADATA).write_text(json.dumps(metadata, sort_keys=True, indent=2))


def read_metadata(directory: Path, trainer: str, format_version: int) -> dict[str, Any]:
    """metadata.json of `directory`; ModelFormatError naming the trainer or version that does not match."""
    path = directory / METADATA
    try:
        metadata = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelFormatError(f"{path} is missing: {directory} holds no saved model") from None
    except (OSError, ValueError) as exc:
        raise ModelFormatError(f"{path} is not readable metadata: {exc}") from None
    if not isinstance(metadata, dict):
        raise ModelFormatError(f"{path} is not a metadata object")
    if metadata.get("trainer") != trainer:
        raise ModelFormatError(f"{directory} holds a model of trainer {metadata.get('trainer')!r}, not {trainer!r}")
    if metadata.get("format_version") != format_version:
        raise ModelFormatError(
            f"{directory} holds {trainer} format_version {metadata.get('format_version')!r}; "
            f"this version reads format_version {format_version}"
        )
    return metadata
