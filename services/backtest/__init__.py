"""Backtest service: backtests on the same simulated broker that paper trading uses."""
