"""Trainers behind one interface (`ml.trainers.base.Trainer`): LightGBM, XGBoost and a PyTorch sequence model."""

from __future__ import annotations

import importlib
from typing import Any

from ml.trainers.base import Trainer

# name -> (module, class); imported on first use (torch alone takes seconds to import).
_REGISTRY = {
    "lightgbm": ("ml.trainers.lightgbm", "LightGBMTrainer"),
    "xgboost": ("ml.trainers.xgboost", "XGBoostTrainer"),
    "torch": ("ml.trainers.torch", "TorchTrainer"),
}
NAMES = tuple(_REGISTRY)


class UnknownTrainerError(ValueError):
    """A trainer name that is not registered."""


def trainer(name: str) -> type[Trainer]:
    """The trainer class registered as `name` ("lightgbm", "xgboost", "torch")."""
    if name not in _REGISTRY:
        raise UnknownTrainerError(f"unknown trainer {name!r}: one of {', '.join(NAMES)}")
    module, attribute = _REGISTRY[name]
    found: type[Trainer] = getattr(importlib.import_module(module), attribute)
    return found


def create(
    name: str,
    params: dict[str, Any] | None = None,
    seed: int = 0,
    *,
    classes: tuple[str, ...] | None = None,
    feature_names: tuple[str, ...] = (),
) -> Trainer:
    """A new, unfitted trainer `name` (every registered trainer takes these arguments)."""
    cls: Any = trainer(name)
    created: Trainer = cls(params, seed, classes=classes, feature_names=feature_names)
    return created
