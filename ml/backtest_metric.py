"""The signal's after-fee PnL in a backtest (issue 16 item 3): a model's predicted probabilities on a test fold replayed
as the signal of `shared.backtest`'s signal follower over the bars of the same range, fees from the fee schedule.

Row i's prediction is known at `known_at[i]` (a dataset's `event_start`: the close of its bar), so it is the signal
of the bar that ends at that instant; the engine shows a bar to the strategy only at its end, so no prediction is
acted on before it is known. The signal is P(up) - P(down), in [-1, 1]: the follower buys `quantity` above
`threshold` and sells what it holds below `-threshold` (long only). PnL is the change of equity, the position marked
at the last close; it is after fees (`fees` is what the fills paid, so `gross_pnl` = `pnl` + `fees`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import numpy.typing as npt

from ml.datasets import Dataset
from shared.backtest.bars import BacktestInputError, Bar, from_us
from shared.backtest.engine import BacktestConfig, BacktestEngine, Latency
from shared.backtest.results import metrics
from shared.backtest.strategies.signal_follower import SignalFollower
from shared.domain.fees import AccountFeeSchedules
from shared.domain.money import InstrumentSpec

UP = "up"
DOWN = "down"


class SignalBacktestError(ValueError):
    """Predictions and bars that cannot be backtested together; the message names the input."""


@dataclass(frozen=True)
class SignalBacktest:
    """How the follower trades a model's signal: the instrument, bar length, order size, starting quote, fees."""

    spec: InstrumentSpec
    bar_interval: timedelta
    quantity: Decimal
    initial_quote: Decimal
    threshold: Decimal = SignalFollower.params["threshold"].default
    fees: AccountFeeSchedules = field(default_factory=AccountFeeSchedules)
    latency: Latency = field(default_factory=Latency)
    seed: int = 0


@dataclass(frozen=True)
class SignalPnL:
    """What following the signal earned: after-fee PnL, the fees paid, PnL before fees, and the fills (quote: Decimal)."""

    pnl: Decimal
    fees: Decimal
    fills: int

    @property
    def gross_pnl(self) -> Decimal:
        """PnL before fees."""
        return self.pnl + self.fees

    def as_metrics(self, prefix: str = "backtest_") -> dict[str, float]:
        """The figures as MLflow metrics (floats; the Decimals stay exact here)."""
        return {f"{prefix}pnl": float(self.pnl), f"{prefix}fees": float(self.fees), f"{prefix}fills": float(self.fills)}


def direction_signal(proba: npt.NDArray[np.float64], classes: Sequence[str]) -> npt.NDArray[np.float64]:
    """P(up) - P(down) per row of `proba` (columns in `classes` order)."""
    if proba.ndim != 2 or proba.shape[1] != len(classes):
        raise SignalBacktestError(f"proba must be (n, {len(classes)}) for classes {tuple(classes)}, got {proba.shape}")
    missing = [name for name in (UP, DOWN) if name not in classes]
    if missing:
        raise SignalBacktestError(f"classes {tuple(classes)} lack {missing[0]!r}: no direction to trade")
    if not bool(np.all(np.isfinite(proba))):
        raise SignalBacktestError("proba holds a non-finite value")
    return np.asarray(proba[:, list(classes).index(UP)] - proba[:, list(classes).index(DOWN)], dtype=np.float64)


class PredictionSignal:
    """A `SignalSource` replaying precomputed signals: the one known at a bar's end, None for a bar without one."""

    def __init__(self, symbol: str, by_end: dict[datetime, float]) -> None:
        self.symbol = symbol
        self.by_end = by_end

    def signal(self, bar: Bar) -> float | None:
        """The signal known when `bar` closed."""
        if bar.symbol != self.symbol:
            return None
        return self.by_end.get(bar.end)


def _check_inputs(
    proba: npt.NDArray[np.float64],
    known_at: npt.NDArray[np.datetime64],
    bars: Sequence[Bar],
    config: SignalBacktest,
) -> None:
    if proba.shape[0] == 0 or known_at.shape[0] == 0:
        raise SignalBacktestError("no predictions to backtest")
    if proba.shape[0] != known_at.shape[0]:
        raise SignalBacktestError(f"proba has {proba.shape[0]} rows but known_at has {known_at.shape[0]}")
    if not bars:
        raise SignalBacktestError("bars: none in the range of the predictions")
    if not Decimal(0) <= config.threshold <= Decimal(1):
        raise SignalBacktestError(f"threshold must be within [0, 1], got {config.threshold}")
    if not config.quantity.is_finite() or config.quantity <= 0:
        raise SignalBacktestError(f"quantity must be a positive decimal, got {config.quantity}")
    symbol = config.spec.symbol
    other = next((bar.symbol for bar in bars if bar.symbol != symbol), None)
    if other is not None:
        raise SignalBacktestError(f"bars: symbol {other!r} is not the backtested {symbol!r}")


def signal_pnl(
    proba: npt.NDArray[np.float64],
    classes: Sequence[str],
    known_at: npt.NDArray[np.datetime64],
    bars: Sequence[Bar],
    config: SignalBacktest,
) -> SignalPnL:
    """Backtest the signal follower on `proba` (one row per `known_at`, a bar end of `bars`); its after-fee PnL."""
    _check_inputs(proba, known_at, bars, config)
    symbol = config.spec.symbol
    values = direction_signal(proba, classes)
    ends = {bar.end for bar in bars}
    by_end: dict[datetime, float] = {}
    for at, value in zip(known_at, values, strict=True):
        moment = from_us(int(at.astype("datetime64[us]").astype(np.int64)))
        if moment not in ends:
            raise SignalBacktestError(
                f"known_at {moment.isoformat()}: no bar ends then (bars end {bars[0].end.isoformat()} .. "
                f"{bars[-1].end.isoformat()}, every {config.bar_interval})"
            )
        if moment in by_end:
            raise SignalBacktestError(f"known_at {moment.isoformat()}: two predictions for one bar")
        by_end[moment] = float(value)
    strategy = SignalFollower(PredictionSignal(symbol, by_end), threshold=config.threshold, quantity=config.quantity)
    engine_config = BacktestConfig(
        specs={symbol: config.spec},
        initial_balances={config.spec.quote: config.initial_quote},
        seed=config.seed,
        latency=config.latency,
        fees=config.fees,
    )
    try:
        run = BacktestEngine(engine_config, strategy).run([list(bars)], bar_interval=config.bar_interval)
    except BacktestInputError as exc:
        raise SignalBacktestError(f"bars: {exc}") from None
    figures = metrics(run)
    return SignalPnL(pnl=Decimal(figures["pnl"]), fees=Decimal(figures["fees"]), fills=int(figures["fills"]))


def bars_between(bars: Sequence[Bar], first_end: datetime, last_end: datetime) -> list[Bar]:
    """The bars that end within [first_end, last_end] (a test fold's range: its first prediction to its last label)."""
    return [bar for bar in bars if first_end <= bar.end <= last_end]


@dataclass(frozen=True)
class FoldBacktest:
    """Bars covering a dataset and how to trade its signal: scores a test fold in trading terms."""

    bars: Sequence[Bar]
    config: SignalBacktest

    def metrics(
        self, proba: npt.NDArray[np.float64], dataset: Dataset, rows: npt.NDArray[np.int64], prefix: str
    ) -> dict[str, float]:
        """After-fee PnL, fees and fills of following `proba` (the predictions of `dataset`'s `rows`)."""
        if rows.shape[0] == 0:
            raise SignalBacktestError("no predictions to backtest")
        known_at = dataset.event_start[rows]
        first = from_us(int(known_at.min().astype(np.int64)))
        last = from_us(int(dataset.event_end[rows].max().astype(np.int64)))
        in_range = bars_between(self.bars, first, last)
        return signal_pnl(proba, dataset.classes, known_at, in_range, self.config).as_metrics(prefix)
