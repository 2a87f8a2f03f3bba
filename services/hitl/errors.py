"""Errors of the hitl service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class HitlError(DomainError):
    code = "hitl_error"
