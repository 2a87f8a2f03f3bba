"""Errors of the analytics service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class AnalyticsError(DomainError):
    code = "analytics_error"
