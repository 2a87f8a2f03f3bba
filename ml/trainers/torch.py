"""A PyTorch sequence model: an LSTM over the window of each row and the `window - 1` rows before it.

Rows arrive in time order; row i is scored from rows i - window + 1 .. i (the first rows see zero-padding before
the series starts). Features are standardized with the training rows' mean and standard deviation; a missing
value (NaN) becomes that mean (0 after standardizing). Runs on `cuda` when torch sees a GPU, else on the CPU with
`torch.use_deterministic_algorithms`, so a seed gives the same weights.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from ml.trainers.base import SearchTrial
from ml.trainers.common import (
    ModelFormatError,
    TrainerError,
    check_fit,
    check_predict,
    merged_params,
    read_metadata,
    write_metadata,
)

MODEL = "model.pt"
DEFAULTS: dict[str, Any] = {
    "window": 16,
    "hidden": 32,
    "layers": 1,
    "dropout": 0.0,
    "epochs": 10,
    "batch_size": 256,
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
}


class SequenceNet(nn.Module):
    """LSTM over a window of feature rows, a linear head on the last step's hidden state."""

    def __init__(self, n_features: int, hidden: int, layers: int, dropout: float, n_classes: int) -> None:
        super().__init__()
        self.lstm = nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True,
                            dropout=dropout if layers > 1 else 0.0)  # fmt: skip
        self.head = nn.Linear(hidden, n_classes)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Class logits (batch, n_classes) of windows (batch, window, n_features)."""
        out, _ = self.lstm(windows)
        logits: torch.Tensor = self.head(out[:, -1, :])
        return logits


def device() -> torch.device:
    """`cuda` when a GPU is visible, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@contextlib.contextmanager
def _deterministic(on_cpu: bool) -> Any:
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(on_cpu or before)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


class TorchTrainer:
    """Sequence classifier over windows of preceding rows (LSTM), trained with Adam on the weighted cross entropy."""

    name: ClassVar[str] = "torch"
    format_version: ClassVar[int] = 1

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        seed: int = 0,
        *,
        classes: tuple[str, ...] | None = None,
        feature_names: tuple[str, ...] = (),
    ) -> None:
        self.params: dict[str, Any] = merged_params(self.name, DEFAULTS, params)
        for key in ("window", "hidden", "layers", "epochs", "batch_size"):
            value = self.params[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise TrainerError(f"torch parameter {key!r} must be a positive integer, got {value!r}")
        self.seed = seed
        self.classes = classes
        self.feature_names = feature_names
        self.device = device()
        self.net: SequenceNet | None = None
        self.mean: npt.NDArray[np.float64] | None = None
        self.std: npt.NDArray[np.float64] | None = None

    def _windows(self, features: npt.NDArray[np.float64]) -> torch.Tensor:
        """(n, window, n_features) standardized windows ending at each row, zero-padded before the first row."""
        assert self.mean is not None  # noqa: S101 (set by fit or load)
        assert self.std is not None  # noqa: S101 (set by fit or load)
        scaled = np.nan_to_num((features - self.mean) / self.std, nan=0.0)
        window = int(self.params["window"])
        padded = np.concatenate([np.zeros((window - 1, scaled.shape[1])), scaled]).astype(np.float32)
        view = np.lib.stride_tricks.sliding_window_view(padded, window, axis=0)  # (n, n_features, window)
        return torch.from_numpy(np.ascontiguousarray(view.transpose(0, 2, 1)))

    def _new_net(self, n_features: int, n_classes: int) -> SequenceNet:
        return SequenceNet(n_features, int(self.params["hidden"]), int(self.params["layers"]),
                           float(self.params["dropout"]), n_classes).to(self.device)  # fmt: skip

    def fit(
        self,
        features: npt.NDArray[np.float64],
        labels: npt.NDArray[np.int64],
        weights: npt.NDArray[np.float64] | None = None,
    ) -> None:
        """Train for `epochs` passes over the rows' windows, shuffled by the seed."""
        self.classes = check_fit(features, labels, weights, self.classes)
        self.mean = (
            np.nan_to_num(np.nanmean(features, axis=0)) if np.isfinite(features).any() else np.zeros(features.shape[1])
        )
        std = np.nan_to_num(np.nanstd(features, axis=0))
        self.std = np.where(std > 0, std, 1.0)
        on_cpu = self.device.type == "cpu"
        with _deterministic(on_cpu):
            torch.manual_seed(self.seed)
            generator = torch.Generator().manual_seed(self.seed)
            windows = self._windows(features).to(self.device)
            target = torch.from_numpy(labels.astype(np.int64)).to(self.device)
            weight = torch.from_numpy((np.ones(len(labels)) if weights is None else weights).astype(np.float32)).to(
                self.device
            )
            self.net = self._new_net(features.shape[1], len(self.classes))
            optimizer = torch.optim.Adam(self.net.parameters(), lr=float(self.params["learning_rate"]),
                                         weight_decay=float(self.params["weight_decay"]))  # fmt: skip
            loss_fn = nn.CrossEntropyLoss(reduction="none")
            self.net.train()
            for _ in range(int(self.params["epochs"])):
                order = torch.randperm(len(labels), generator=generator).to(self.device)
                for batch in torch.split(order, int(self.params["batch_size"])):
                    optimizer.zero_grad()
                    losses = loss_fn(self.net(windows[batch]), target[batch])
                    loss = (losses * weight[batch]).sum() / weight[batch].sum().clamp_min(1e-12)
                    loss.backward()
                    optimizer.step()
            self.net.eval()

    def predict_proba(self, features: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """(n, n_classes) class probabilities, row i from the window ending at row i."""
        check_predict(features, None if self.mean is None else int(self.mean.shape[0]))
        assert self.net is not None  # noqa: S101 (fitted: check_predict raised otherwise)
        with _deterministic(self.device.type == "cpu"), torch.no_grad():
            logits = self.net(self._windows(features).to(self.device))
            return torch.softmax(logits, dim=1).double().cpu().numpy()

    def save(self, directory: Path) -> None:
        """model.pt (the state dict and the standardization) and metadata.json."""
        if self.net is None or self.classes is None or self.mean is None or self.std is None:
            raise TrainerError("the model is not fitted: nothing to save")
        write_metadata(directory, self._metadata())
        state = {key: value.cpu() for key, value in self.net.state_dict().items()}
        torch.save({"state": state, "mean": torch.from_numpy(self.mean), "std": torch.from_numpy(self.std)},
                   directory / MODEL)  # fmt: skip

    def _metadata(self) -> dict[str, Any]:
        return {
            "trainer": self.name,
            "format_version": self.format_version,
            "params": self.params,
            "seed": self.seed,
            "classes": list(self.classes or ()),
            "feature_names": list(self.feature_names),
            "library_version": torch.__version__,
            "n_features": 0 if self.mean is None else int(self.mean.shape[0]),
        }

    @classmethod
    def load(cls, directory: Path) -> Self:
        """A trainer with the weights and metadata `save` wrote (on this machine's device)."""
        metadata = read_metadata(directory, cls.name, cls.format_version)
        if not (directory / MODEL).is_file():
            raise ModelFormatError(f"{directory / MODEL} is missing")
        model = cls(metadata["params"], metadata["seed"], classes=tuple(metadata["classes"]),
                    feature_names=tuple(metadata["feature_names"]))  # fmt: skip
        saved = torch.load(directory / MODEL, map_location="cpu", weights_only=True)
        model.mean = saved["mean"].numpy()
        model.std = saved["std"].numpy()
        net = model._new_net(int(metadata["n_features"]), len(model.classes or ()))
        net.load_state_dict(saved["state"])
        net.eval()
        model.net = net
        return model

    @classmethod
    def search_space(cls, trial: SearchTrial) -> dict[str, Any]:
        """Window, width, depth, dropout, epochs, learning rate, weight decay."""
        return {
            "window": trial.suggest_categorical("window", [8, 16, 32, 64]),
            "hidden": trial.suggest_categorical("hidden", [16, 32, 64]),
            "layers": trial.suggest_int("layers", 1, 2),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "epochs": trial.suggest_int("epochs", 5, 40, log=True),
            "learning_rate": trial.suggest_float("learning_rate", 1e-4, 1e-2, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 1e-6, 1e-2, log=True),
        }
