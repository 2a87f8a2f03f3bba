"""The signal's after-fee PnL in a backtest (ml.backtest_metric): hand-computed tiny cases and bad input."""

from __future__ import annotations

import dataclasses
import itertools
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np
import numpy.typing as npt
import pytest

from ml.backtest_metric import SignalBacktest, SignalBacktestError, direction_signal, signal_pnl
from shared.backtest.bars import Bar
from shared.backtest.engine import Latency
from shared.domain.fees import AccountFeeSchedules, FeeSchedule, FeeTier
from shared.venues.instruments import venue_precision

SPEC = venue_precision("kraken").specs()["BTC/USD"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
MINUTE = timedelta(minutes=1)
CLOSES = (1000, 1100, 1000, 1100, 1000, 1100)
BARS = [
    Bar("BTC/USD", T0 + i * MINUTE, T0 + (i + 1) * MINUTE, *(Decimal(c),) * 4, Decimal(5)) for i, c in enumerate(CLOSES)
]
# One prediction per bar but the last, known at that bar's close; "up" when the next close is higher.
KNOWN_AT = np.array([np.datetime64(b.end.replace(tzinfo=None), "us") for b in BARS[:-1]])
UP = np.array([float(b > a) for a, b in itertools.pairwise(CLOSES)])
PERFECT = np.column_stack([1.0 - UP, UP])
CLASSES = ("down", "up")
CONFIG = SignalBacktest(SPEC, MINUTE, Decimal(1), Decimal(10_000), latency=Latency(timedelta(0), timedelta(0)))
NO_FEES = AccountFeeSchedules(FeeSchedule((FeeTier(Decimal(0), Decimal(0), Decimal(0)),)))


def test_a_perfect_signal_earns_the_hand_computed_pnl_after_kraken_fees() -> None:
    result = signal_pnl(PERFECT, CLASSES, KNOWN_AT, BARS, CONFIG)
    # Buys at close + 1 tick (1000.1), sells at close - 1 tick (1099.9): two round trips of 99.8, then a long
    # bought at 1000.1 marked at the last close 1100 (99.9). Taker 0.40 % of 3 x 1000.1 + 2 x 1099.9 = 20.8004.
    assert result.fills == 5
    assert result.gross_pnl == Decimal("299.5")
    assert result.fees == Decimal("20.8004")
    assert result.pnl == Decimal("278.6996")


def test_a_reversed_signal_loses() -> None:
    result = signal_pnl(PERFECT[:, ::-1].copy(), CLASSES, KNOWN_AT, BARS, CONFIG)
    # Buys the 1100 tops (1100.1) and sells the 1000 bottoms (999.9) twice.
    assert result.fills == 4
    assert result.gross_pnl == Decimal("-200.4")
    assert result.pnl == Decimal("-217.2")


def test_fees_reduce_pnl_by_exactly_the_fees_paid() -> None:
    free = signal_pnl(PERFECT, CLASSES, KNOWN_AT, BARS, dataclasses.replace(CONFIG, fees=NO_FEES))
    charged = signal_pnl(PERFECT, CLASSES, KNOWN_AT, BARS, CONFIG)
    assert free.fees == 0
    assert charged.fees > 0
    assert charged.pnl == free.pnl - charged.fees


def test_a_signal_inside_the_threshold_does_not_trade() -> None:
    unsure = np.full_like(PERFECT, 0.5)
    result = signal_pnl(unsure, CLASSES, KNOWN_AT, BARS, CONFIG)
    assert (result.fills, result.pnl, result.fees) == (0, Decimal(0), Decimal(0))


def test_metrics_for_mlflow() -> None:
    figures = signal_pnl(PERFECT, CLASSES, KNOWN_AT, BARS, CONFIG).as_metrics("fold_backtest_")
    assert figures == {"fold_backtest_pnl": 278.6996, "fold_backtest_fees": 20.8004, "fold_backtest_fills": 5.0}


def test_ternary_classes_trade_on_up_minus_down() -> None:
    proba = np.array([[0.1, 0.2, 0.7], [0.6, 0.3, 0.1]])
    assert direction_signal(proba, ("down", "flat", "up")).tolist() == pytest.approx([0.6, -0.5])


@pytest.mark.parametrize(
    ("proba", "known_at", "bars", "named"),
    [
        (PERFECT[:3], KNOWN_AT, BARS, "proba has 3 rows but known_at has 5"),
        (PERFECT[:0], KNOWN_AT[:0], BARS, "no predictions"),
        (PERFECT, KNOWN_AT, [], "bars: none"),
        (PERFECT, KNOWN_AT + np.timedelta64(30, "s"), BARS, "known_at 2026-01-01T00:01:30+00:00: no bar ends then"),
        (PERFECT, KNOWN_AT, BARS[:3], "no bar ends then"),
        (np.column_stack([UP, UP, UP]), KNOWN_AT, BARS, "proba must be (n, 2)"),
        (np.where(PERFECT > 0, np.nan, 0.0), KNOWN_AT, BARS, "non-finite"),
        (PERFECT, np.concatenate([KNOWN_AT[:1], KNOWN_AT[:4]]), BARS, "two predictions for one bar"),
        (PERFECT, KNOWN_AT, [dataclasses.replace(b, symbol="ETH/USD") for b in BARS], "symbol 'ETH/USD'"),
        (PERFECT[[0, 1, 3, 4]], KNOWN_AT[[0, 1, 3, 4]], BARS[:2] + BARS[3:], "bars: BTC/USD bars"),
    ],
)
def test_bad_input_is_refused_naming_it(
    proba: npt.NDArray[np.float64], known_at: npt.NDArray[np.datetime64], bars: list[Bar], named: str
) -> None:
    with pytest.raises(SignalBacktestError, match=re.escape(named)):
        signal_pnl(proba, CLASSES, known_at, bars, CONFIG)


def test_classes_without_a_direction_are_refused() -> None:
    with pytest.raises(SignalBacktestError, match="lack 'up'"):
        signal_pnl(PERFECT, ("down", "flat"), KNOWN_AT, BARS, CONFIG)


@pytest.mark.parametrize(("field", "value"), [("threshold", Decimal(2)), ("quantity", Decimal(0))])
def test_bad_settings_are_refused_naming_them(field: str, value: Decimal) -> None:
    with pytest.raises(SignalBacktestError, match=field):
        signal_pnl(PERFECT, CLASSES, KNOWN_AT, BARS, dataclasses.replace(CONFIG, **{field: value}))
