"""Errors of the hitl service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from typing import ClassVar

from shared.errors import DomainError


class HitlError(DomainError):
    code: ClassVar[str] = "hitl_error"


class RequestNotFound(HitlError):
    status_code = 404
    code = "request_not_found"


class PolicyNotFound(HitlError):
    status_code = 404
    code = "policy_not_found"


class PayloadHashMismatch(HitlError):
    """The caller saw another payload than the one the request binds: nothing is approved."""

    status_code = 409
    code = "payload_hash_mismatch"


class RequestAlreadyDecided(HitlError):
    status_code = 409
    code = "request_already_decided"


class RequestExpired(HitlError):
    status_code = 409
    code = "request_expired"


class AlreadyVoted(HitlError):
    status_code = 409
    code = "already_voted"


class SubjectConflict(HitlError):
    """A request for this subject exists with another payload."""

    status_code = 409
    code = "subject_conflict"


class SelfApproval(HitlError):
    """The requester of a request cannot vote on it."""

    status_code = 403
    code = "self_approval"


class NotAnEligibleDirector(HitlError):
    status_code = 403
    code = "not_an_eligible_director"


class FreshOtpRequired(HitlError):
    """Voting needs a token whose holder proved a TOTP code within the last 120 s (POST /auth/step-up)."""

    status_code = 403
    code = "fresh_otp_required"


class PolicyWeakeningRefused(HitlError):
    """Making an approval policy less strict needs a director with a fresh TOTP proof (not an admin token)."""

    status_code = 403
    code = "policy_weakening_needs_director"
