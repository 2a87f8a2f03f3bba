"""Errors of the hedge service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import DomainError


class HedgeError(DomainError):
    code = "hedge_error"


class AccountNotTracked(HedgeError):
    status_code = 404
    code = "account_not_tracked"


class NoActiveOverride(HedgeError):
    status_code = 404
    code = "no_active_override"


class NothingToRearm(HedgeError):
    status_code = 409
    code = "nothing_to_rearm"


class InvalidOverride(HedgeError):
    status_code = 422
    code = "invalid_override"


class InvalidPolicy(HedgeError):
    status_code = 422
    code = "invalid_policy"


class ApprovalPolicyUnavailable(HedgeError):
    status_code = 503
    code = "approval_policy_unavailable"
