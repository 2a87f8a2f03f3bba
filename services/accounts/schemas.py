"""Request and response models of the accounts service (Create/Update/Read kept separate, extra="forbid")."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from shared.auth.roles import Role, Scope
from shared.web import IDENTIFIER_PATTERN, Encodable, Identifier, Reason, safe_text

Username = Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")]
AccountId = Identifier
TotpCode = Annotated[str, StringConstraints(pattern=r"^[0-9]{6}$")]
# What a person or a generator may put in a password or secret: anything but NUL (PostgreSQL refuses it).
NO_NUL_PATTERN = r"^[^\x00]*$"


def _secret(min_length: int, max_length: int) -> StringConstraints:
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=NO_NUL_PATTERN)


def _route_scope(scope: Scope) -> Scope:
    if scope is Scope.TOTP_ENROLL:
        raise ValueError("totp:enroll marks the enrollment token and cannot be granted")
    return scope


# The scopes routes check: an unknown one is refused rather than silently granting nothing.
ServiceScope = Annotated[Scope, AfterValidator(_route_scope)]

# A service identity's accounts: account ids, or "*" for every account.
GrantedAccount = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=rf"^(\*|{IDENTIFIER_PATTERN[1:-1]})$")
]


class HumanRole(StrEnum):
    """Roles a user may hold (`service` is for service identities only)."""

    VIEWER = Role.VIEWER.value
    OPERATOR = Role.OPERATOR.value
    RISK = Role.RISK.value
    DIRECTOR = Role.DIRECTOR.value
    ADMIN = Role.ADMIN.value
    AUDITOR = Role.AUDITOR.value


class Venue(StrEnum):
    PAPER = "paper"
    KRAKEN = "kraken"
    BINANCE = "binance"
    COINBASE = "coinbase"


class AccountKind(StrEnum):
    COMPANY = "company"
    DIRECTOR = "director"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"
    CLOSED = "closed"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LoginRequest(Strict):
    username: Annotated[str, safe_text(min_length=1, max_length=64), Encodable]
    password: Annotated[str, _secret(1, 256), Encodable]
    totp_code: TotpCode | None = None


class RefreshRequest(Strict):
    refresh_token: Annotated[str, _secret(1, 200), Encodable]


class LogoutRequest(Strict):
    refresh_token: Annotated[str, _secret(1, 200), Encodable] | None = None


class TotpCodeRequest(Strict):
    totp_code: TotpCode


class TotpEnrollRequest(Strict):
    password: Annotated[str, _secret(1, 256), Encodable]


class TokenResponse(Strict):
    access_token: str
    refresh_token: str | None = None
    token_type: str = "bearer"  # noqa: S105 - the OAuth token type, not a secret
    expires_in: int


class TotpEnrollment(Strict):
    provisioning_uri: str


class UserCreate(Strict):
    username: Username
    password: Annotated[str, _secret(1, 256), Encodable]
    roles: Annotated[list[HumanRole], Field(min_length=1, max_length=6)]


class RolesUpdate(Strict):
    roles: Annotated[list[HumanRole], Field(min_length=1, max_length=6)]
    reason: Reason | None = None


class GrantCreate(Strict):
    account_id: AccountId
    reason: Reason | None = None


class UserRead(Strict):
    user_id: str
    username: str
    roles: list[str]
    status: str
    totp_enabled: bool
    accounts: list[str]
    created_at: datetime


class AccountCreate(Strict):
    account_id: AccountId
    name: Annotated[str, safe_text(min_length=1, max_length=120), Encodable]
    kind: AccountKind
    venue: Venue
    owner_user_id: Identifier | None = None


class AccountRead(Strict):
    account_id: str
    name: str
    kind: AccountKind
    venue: Venue
    status: AccountStatus
    owner_user_id: str | None
    created_at: datetime


class CredentialsPut(Strict):
    api_key: Annotated[str, _secret(8, 512), Encodable]
    api_secret: Annotated[str, _secret(8, 1024), Encodable]
    label: Annotated[str, safe_text(max_length=120), Encodable] | None = None


class CredentialsRead(Strict):
    """What may be shown about stored exchange credentials: never the secret, never the key itself."""

    account_id: str
    key_id: str
    fingerprint: str
    created_at: datetime
    rotated_at: datetime | None


class ServiceIdentityCreate(Strict):
    name: Annotated[str, StringConstraints(min_length=3, max_length=64, pattern=r"^[a-z][a-z0-9-]*$")]
    scopes: Annotated[list[ServiceScope], Field(max_length=30)]
    accounts: Annotated[list[GrantedAccount], Field(max_length=1000)] = Field(default_factory=list)


class ServiceIdentityCreated(Strict):
    client_id: str
    client_secret: str
    name: str


class ServiceTokenRequest(Strict):
    client_id: Annotated[str, safe_text(min_length=1, max_length=100), Encodable]
    client_secret: Annotated[str, _secret(1, 200), Encodable]
