"""Errors of the backtest service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class BacktestError(DomainError):
    code = "backtest_error"


class InvalidBacktest(BacktestError):
    """A run the engine cannot do: unknown strategy or scenario, a parameter outside its range, an empty or gapped
    range, a missing file; the message names it."""

    status_code = 422
    code = "invalid_backtest"


class RunNotFound(BacktestError):
    status_code = 404
    code = "run_not_found"


class SweepNotFound(BacktestError):
    status_code = 404
    code = "sweep_not_found"


class RunNotFinished(BacktestError):
    """The run has no result (yet, or because it failed: `details.status` says which)."""

    status_code = 409
    code = "run_not_finished"


class WorkersRestarting(BacktestError):
    """A worker process died while it checked the request; the pool is replaced: submit again."""

    status_code = 503
    code = "workers_restarting"
