"""Errors of the reports service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class ReportsError(DomainError):
    code = "reports_error"


class AccountNotFound(ReportsError):
    """No event of the account has reached the read model."""

    status_code = 404
    code = "account_not_found"


class InvalidRange(ReportsError):
    """`from` after `to`, a range longer than allowed, or an unknown time zone; `details.field` names it."""

    status_code = 422
    code = "invalid_range"


class FirmViewForbidden(ReportsError):
    """The firm view (no `account_id`) is for directors."""

    status_code = 403
    code = "firm_view_forbidden"


class PriceMissing(ReportsError):
    """An asset held has no price at or before an instant the report needs: no NAV is guessed."""

    status_code = 409
    code = "price_missing"
