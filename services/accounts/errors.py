"""Errors of the accounts service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class AccountsError(DomainError):
    code = "accounts_error"
