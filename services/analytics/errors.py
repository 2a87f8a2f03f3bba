"""Errors of the analytics service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import RULE_VIOLATION, DomainError, NotFound, Unprocessable


class AnalyticsError(DomainError):
    code = "analytics_error"


class UnknownSymbol(NotFound):
    """Nothing is stored for the symbol (no trade, no book snapshot)."""

    code = "unknown_symbol"

    def __init__(self, symbol: str, field: str = "symbol") -> None:
        super().__init__(f"{field}: nothing is stored for {symbol!r}", details={"field": field})


class InvalidQuery(Unprocessable):
    """A query that matches its schema but breaks a rule between fields (from after to, a window too large)."""

    code = RULE_VIOLATION

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details={"field": field})
