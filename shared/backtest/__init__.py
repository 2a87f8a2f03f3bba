"""Backtesting on the paper venue's own domain code: matching, ledger, fees, limits (docs/backtest.md)."""
