"""Follows a model signal: long while the signal is above `threshold`, flat when it falls below `-threshold`.

A caller passes its `SignalSource` (ml.backtest_metric replays a model's predictions); without one the
`StubSignalSource` stands in. It is a STUB, named as such: a seeded mix of the bar's momentum and noise, not a model.
"""

from __future__ import annotations

import math
import random
from decimal import Decimal
from typing import ClassVar, Protocol

from shared.backtest.bars import Bar
from shared.backtest.strategy import Param, Strategy, StrategyContext
from shared.domain.types import OrderSide


class SignalSource(Protocol):
    """Where the follower's signal in [-1, 1] comes from."""

    def signal(self, bar: Bar) -> float | None:
        """The signal known at the end of `bar` (None: no signal, hold)."""
        ...


class StubSignalSource:
    """STUB signal in [-1, 1] per bar (seeded momentum plus noise) until a trained model serves real ones."""

    def __init__(self, seed: int, lookback: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311  # a seeded stub, not a secret
        self._lookback = lookback
        self._closes: dict[str, list[float]] = {}

    def signal(self, bar: Bar) -> float | None:
        """The signal for `bar`'s symbol after `bar` (None until `lookback` bars were seen)."""
        closes = self._closes.setdefault(bar.symbol, [])
        closes.append(float(bar.close))
        if len(closes) <= self._lookback:
            return None
        momentum = closes[-1] / closes[-1 - self._lookback] - 1.0
        del closes[: -self._lookback - 1]
        return math.tanh(momentum * 500.0 + self._rng.gauss(0.0, 0.25))


class SignalFollower(Strategy):
    """Trades `quantity` on the signal of `source` (default: the `StubSignalSource`)."""

    name = "signal_follower"
    params: ClassVar = {
        "threshold": Param(Decimal("0.5"), Decimal(0), Decimal(1)),
        "lookback": Param(Decimal(10), Decimal(1), Decimal(1000), integer=True),
        "quantity": Param(Decimal("0.01"), Decimal("0.00001"), Decimal(1000)),
        "signal_seed": Param(Decimal(0), Decimal(0), Decimal(2**31), integer=True),
    }

    def __init__(self, source: SignalSource | None = None, **values: Decimal) -> None:
        super().__init__(**values)
        self.source: SignalSource = source or StubSignalSource(
            int(self.values["signal_seed"]), int(self.values["lookback"])
        )
        self._threshold = float(self.values["threshold"])

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        signal = self.source.signal(bar)
        if signal is None:
            return
        held = ctx.position(bar.symbol)
        if signal > self._threshold and held == 0:
            ctx.submit(bar.symbol, OrderSide.BUY, self.values["quantity"])
        elif signal < -self._threshold and held > 0:
            ctx.submit(bar.symbol, OrderSide.SELL, held)
