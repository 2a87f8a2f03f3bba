"""Errors of the risk service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class RiskError(DomainError):
    code = "risk_error"


class InvalidLimits(RiskError):
    """Limits that contradict each other or cannot be limits (negative, zero caps); names the field."""

    status_code = 422
    code = "invalid_limits"


class TransitionForbidden(RiskError):
    """The caller's role may not make this trading state change (e.g. leaving HALTED needs `director`)."""

    status_code = 403
    code = "forbidden"


class LimitsConflict(RiskError):
    status_code = 409
    code = "limits_conflict"
