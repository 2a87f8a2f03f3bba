"""Feature bars of a replayed SYNTHETIC market (data.replay's seeded random walk through the streaming feature
engine), and the dataset the ML tests build from them."""

from __future__ import annotations

import dataclasses
import functools
from datetime import UTC, datetime, timedelta

import numpy as np

from data.features.definitions import BAR_SECONDS
from data.features.store import from_us
from data.features.stream import FeatureBar, FeatureStream
from data.replay.source import SyntheticMarket
from ml.datasets import Dataset, DatasetSpec
from ml.datasets.build import PRICE, from_bars

START = datetime(2026, 3, 1, tzinfo=UTC)
VENUE = "synthetic"  # SyntheticMarket's venue
FEATURE_SET = ("spread_bps", "depth_imbalance", "ofi", "signed_volume", "trade_intensity", "vwap_deviation", "rv_5",
               "rv_15")  # fmt: skip
LABEL = {"method": "triple_barrier", "horizon": 10, "profit_take": 1.5, "stop_loss": 1.5, "vol_window": 20}


def replayed_bars(symbol: str, bars: int, *, seed: int = 11) -> tuple[FeatureBar, ...]:
    """About `bars` closed one-minute feature bars of a seeded synthetic market (one market step per 20 s), named
    `symbol` (the same bars for every symbol: the replay runs once per process)."""
    return tuple(dataclasses.replace(bar, symbol=symbol) for bar in _replay(bars, seed))


@functools.cache
def _replay(bars: int, seed: int) -> tuple[FeatureBar, ...]:
    market = SyntheticMarket(symbol="SYN/USD", seed=seed, start_at=START, step_s=20.0, volatility=0.0008)
    stream = FeatureStream()
    closed: list[FeatureBar] = []
    end = START + timedelta(seconds=BAR_SECONDS * bars)
    for message in market.messages():
        if message.timestamp >= end:
            break
        closed.extend(stream.on_message(message))
    return (*closed, *stream.flush())


def spec(symbol: str, bars: int, label: dict[str, object] | None = None) -> DatasetSpec:
    """The dataset spec over the replayed range."""
    return DatasetSpec(VENUE, symbol, START, START + timedelta(seconds=BAR_SECONDS * bars), FEATURE_SET,
                       dict(LABEL if label is None else label))  # fmt: skip


def dataset(symbol: str, bars: int) -> Dataset:
    """The dataset of replayed bars, built in memory the way `ml.datasets.build.build` builds it from the store."""
    closed = replayed_bars(symbol, bars)
    return from_bars(
        spec(symbol, bars),
        np.array([from_us(bar.bar_us).replace(tzinfo=None) for bar in closed], dtype="datetime64[us]"),
        np.array([_float(bar.values[PRICE]) for bar in closed]),
        np.array([[_float(bar.values[name]) for name in FEATURE_SET] for bar in closed]),
    )


def _float(value: float | None) -> float:
    return float("nan") if value is None else value
