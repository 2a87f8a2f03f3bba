"""Errors of the accounts service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import Conflict, DomainError, NotFound, Unprocessable


class AccountsError(DomainError):
    code = "accounts_error"


class InvalidCredentials(AccountsError):
    """Same answer whether the user exists, the password is wrong or the TOTP code is wrong."""

    status_code = 401
    code = "invalid_credentials"


class TotpRequired(AccountsError):
    status_code = 401
    code = "totp_required"


class TotpEnrollmentRequired(AccountsError):
    """A director without confirmed TOTP: only the enrollment token in `details` is issued."""

    status_code = 403
    code = "totp_enrollment_required"


class TotpAlreadyConfirmed(Conflict):
    code = "totp_already_confirmed"


class TotpNotEnrolled(Conflict):
    code = "totp_not_enrolled"


class InvalidTotp(AccountsError):
    status_code = 401
    code = "invalid_totp"


class InvalidRefreshToken(AccountsError):
    status_code = 401
    code = "invalid_refresh_token"


class TooManyAttempts(AccountsError):
    status_code = 429
    code = "too_many_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many failed login attempts; retry later", details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class WeakPassword(Unprocessable):
    code = "weak_password"


class SecretInLoggedField(Unprocessable):
    code = "secret_in_logged_field"


class UsernameTaken(Conflict):
    code = "username_taken"


class AccountExists(Conflict):
    code = "account_exists"


class UserNotFound(NotFound):
    code = "user_not_found"


class AccountNotFound(NotFound):
    code = "account_not_found"


class CredentialsNotFound(NotFound):
    code = "credentials_not_found"


class SigningKeyMissing(AccountsError):
    status_code = 503
    code = "signing_key_missing"


class UnknownServiceIdentity(AccountsError):
    status_code = 401
    code = "invalid_client"
