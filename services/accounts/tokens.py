"""Access and refresh tokens for users: claims from the user row and grants, refresh tokens opaque and hashed."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from shared.auth.roles import Role, default_scopes, parse_roles
from shared.auth.tokens import ALL_ACCOUNTS

REFRESH_PREFIX = "art_"
# Roles whose work spans every account: granted ["*"] under that role only; every other role gets the user's grants.
ALL_ACCOUNT_ROLES = frozenset({Role.ADMIN, Role.AUDITOR, Role.RISK})
PASSWORD = "pwd"  # noqa: S105 - RFC 8176 amr value
OTP = "otp"


def new_refresh_token() -> str:
    """256 random bits, URL-safe; only its SHA-256 is stored."""
    return REFRESH_PREFIX + secrets.token_urlsafe(32)


def refresh_token_hash(token: str) -> str:
    """The stored form of a refresh token (a random token needs no salt or slow hash)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def token_grants(roles: Iterable[Role], granted: Sequence[str]) -> dict[Role, list[str]]:
    """The `grants` claim, per role: ["*"] for admin/auditor/risk, the user's granted accounts for the others
    (so an operator+auditor granted A trades on A only; the auditor role reads everything)."""
    return {role: [ALL_ACCOUNTS] if role in ALL_ACCOUNT_ROLES else sorted(granted) for role in roles}


@dataclass(frozen=True, slots=True)
class UserClaims:
    """What an access token says about a user."""

    user_id: str
    roles: frozenset[Role]
    grants: Mapping[Role, list[str]]
    amr: tuple[str, ...]
    auth_time: datetime

    @classmethod
    def of(
        cls, user_id: str, role_names: Iterable[str], granted: Sequence[str], amr: Iterable[str], auth_time: datetime
    ) -> UserClaims:
        roles = parse_roles(role_names)
        return cls(user_id, roles, token_grants(roles, granted), tuple(sorted(set(amr))), auth_time)

    @property
    def scopes(self) -> frozenset[str]:
        return default_scopes(self.roles)
