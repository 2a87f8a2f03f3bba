"""Every SQL statement of the backtest service (schema `backtest`)."""

from __future__ import annotations

SCHEMA = "backtest"
