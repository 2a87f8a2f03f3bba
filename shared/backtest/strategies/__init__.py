"""The example strategies and the registry the CLI resolves names with."""

from __future__ import annotations

from collections.abc import Mapping

from shared.backtest.bars import BacktestInputError
from shared.backtest.strategies.ema_cross import EmaCross
from shared.backtest.strategies.market_maker import PassiveMarketMaker
from shared.backtest.strategies.signal_follower import SignalFollower
from shared.backtest.strategy import Strategy, parse_params

STRATEGIES: Mapping[str, type[Strategy]] = {cls.name: cls for cls in (EmaCross, PassiveMarketMaker, SignalFollower)}


def make_strategy(name: str, params: Mapping[str, str]) -> Strategy:
    """The named strategy with its parameters checked; `BacktestInputError` names an unknown one or a bad value."""
    strategy = STRATEGIES.get(name)
    if strategy is None:
        raise BacktestInputError(f"unknown strategy {name!r} (known: {', '.join(sorted(STRATEGIES))})")
    return strategy(**parse_params(strategy, params))
