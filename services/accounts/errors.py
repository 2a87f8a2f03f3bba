"""Errors of the accounts service; each carries its HTTP status and a machine-readable code."""

from __future__ import annotations

from shared.errors import Conflict, DomainError, NotFound, Unprocessable


class AccountsError(DomainError):
    code = "accounts_error"


class InvalidCredentials(AccountsError):
    """Same answer whether the user exists, the password is wrong or the TOTP code is wrong."""

    status_code = 401
    code = "invalid_credentials"


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


class RetryLater(AccountsError):
    """A refusal that says when to come back (the handler adds a Retry-After header)."""

    retry_after_s: int


class TooManyAttempts(RetryLater):
    status_code = 429
    code = "too_many_attempts"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("too many failed attempts; retry later", details={"retry_after_s": retry_after_s})
        self.retry_after_s = retry_after_s


class PasswordCheckBusy(RetryLater):
    """Every password-check slot and queue place is taken (a flood of logins): nothing was checked."""

    status_code = 503
    code = "password_check_busy"

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(
            "too many password checks in progress; retry shortly", details={"retry_after_s": retry_after_s}
        )
        self.retry_after_s = retry_after_s


class InvalidClientRelay(AccountsError):
    """A forwarded client address came without a valid relay credential (only trusted services may relay)."""

    status_code = 401
    code = "invalid_client_relay"


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
