"""Errors of the backtest service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class BacktestError(DomainError):
    code = "backtest_error"
