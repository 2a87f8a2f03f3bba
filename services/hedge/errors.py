"""Errors of the hedge service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class HedgeError(DomainError):
    code = "hedge_error"
