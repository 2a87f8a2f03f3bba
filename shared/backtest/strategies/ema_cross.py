"""EMA cross on bars: long `quantity` while the fast EMA is above the slow one, flat otherwise."""

from __future__ import annotations

from decimal import Decimal
from typing import ClassVar

from shared.backtest.bars import BacktestInputError, Bar
from shared.backtest.strategy import Param, Strategy, StrategyContext
from shared.domain.types import OrderSide


class EmaCross(Strategy):
    """Buys on a golden cross (fast EMA crosses above slow), sells the whole position on a death cross."""

    name = "ema_cross"
    params: ClassVar = {
        "fast": Param(Decimal(12), Decimal(2), Decimal(500), integer=True),
        "slow": Param(Decimal(26), Decimal(3), Decimal(2000), integer=True),
        "quantity": Param(Decimal("0.01"), Decimal("0.00001"), Decimal(1000)),
    }

    def __init__(self, **values: Decimal) -> None:
        super().__init__(**values)
        if self.values["fast"] >= self.values["slow"]:
            raise BacktestInputError(f"ema_cross: fast={self.values['fast']} must be below slow={self.values['slow']}")
        self._fast_alpha = 2.0 / (float(self.values["fast"]) + 1.0)
        self._slow_alpha = 2.0 / (float(self.values["slow"]) + 1.0)
        self._warmup = int(self.values["slow"])
        self._state: dict[str, list[float]] = {}  # symbol -> [fast, slow, bars seen, was above]

    def on_bar(self, ctx: StrategyContext, bar: Bar) -> None:
        price = float(bar.close)
        state = self._state.get(bar.symbol)
        if state is None:
            self._state[bar.symbol] = [price, price, 1.0, 0.0]
            return
        fast = state[0] = state[0] + self._fast_alpha * (price - state[0])
        slow = state[1] = state[1] + self._slow_alpha * (price - state[1])
        state[2] += 1.0
        above = fast > slow
        was_above = state[3] > 0.0
        state[3] = 1.0 if above else 0.0
        if state[2] <= self._warmup or above == was_above:
            return
        held = ctx.position(bar.symbol)
        if above and held == 0:
            ctx.submit(bar.symbol, OrderSide.BUY, self.values["quantity"])
        elif not above and held > 0:
            ctx.submit(bar.symbol, OrderSide.SELL, held)
