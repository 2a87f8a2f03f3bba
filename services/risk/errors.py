"""Errors of the risk service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class RiskError(DomainError):
    code = "risk_error"
