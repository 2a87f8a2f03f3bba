"""Errors of the reports service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class ReportsError(DomainError):
    code = "reports_error"
