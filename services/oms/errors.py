"""Errors of the oms service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class OmsError(DomainError):
    code = "oms_error"
