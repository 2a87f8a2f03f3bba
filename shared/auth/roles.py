"""Roles and scopes carried by Aether bearer tokens.

A role says who the caller is (`operator`, `director`...); a scope says what the token may do
(`orders:write`). Routes check both explicitly: no role implies another one, and `admin` does not
pass a role check unless the route lists it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    RISK = "risk"
    DIRECTOR = "director"
    ADMIN = "admin"
    AUDITOR = "auditor"
    SERVICE = "service"


class UnknownRole(ValueError):
    """A role name that is not one of `Role`."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown role: {name!r}")
        self.name = name


class Scope(StrEnum):
    """The scopes routes check; a scope is `<resource>:<action>`, values are plain strings on the wire."""

    ORDERS_READ = "orders:read"
    ORDERS_WRITE = "orders:write"
    ACCOUNTS_READ = "accounts:read"
    ACCOUNTS_WRITE = "accounts:write"
    KEYS_WRITE = "keys:write"
    USERS_READ = "users:read"
    USERS_WRITE = "users:write"
    KEYS_READ = "keys:read"
    FUNDS_WRITE = "funds:write"
    EXITS_WRITE = "exits:write"
    RISK_READ = "risk:read"
    RISK_WRITE = "risk:write"
    HEDGE_READ = "hedge:read"
    HEDGE_WRITE = "hedge:write"
    APPROVALS_READ = "approvals:read"
    APPROVALS_WRITE = "approvals:write"
    APPROVALS_REQUEST = "approvals:request"
    APPROVAL_POLICIES_WRITE = "approval_policies:write"
    KILL_SWITCH_WRITE = "kill_switch:write"
    AUDIT_READ = "audit:read"
    REPORTS_READ = "reports:read"
    MARKET_DATA_READ = "market_data:read"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    BACKTESTS_READ = "backtests:read"
    BACKTESTS_WRITE = "backtests:write"
    # Trading on the paper venue process (`services/paper`) on behalf of the accounts granted: the OMS alone.
    VENUE_TRADE = "venue:trade"
    # A service that logs people in on their behalf (the director inbox) may name their address (docs/accounts.md).
    AUTH_RELAY_CLIENT = "auth:relay_client"
    # Carried alone by the short-lived enrollment token a password login returns before TOTP is bound.
    TOTP_ENROLL = "totp:enroll"


SCOPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")

_READ_ALL = frozenset(
    {
        Scope.ORDERS_READ,
        Scope.ACCOUNTS_READ,
        Scope.RISK_READ,
        Scope.HEDGE_READ,
        Scope.REPORTS_READ,
        Scope.MARKET_DATA_READ,
        Scope.BACKTESTS_READ,
    }
)

# What an issuer grants a user by default for a role (at login). Each route checks a role AND a scope
# (shared/web.py), and every role a route admits holds that route's scope here, so a user token does what its
# roles allow; a service identity holds only the scopes it was created with.
DEFAULT_SCOPES: Mapping[Role, frozenset[str]] = {
    Role.VIEWER: _READ_ALL,
    Role.OPERATOR: _READ_ALL
    | {
        Scope.ORDERS_WRITE,
        Scope.FUNDS_WRITE,
        Scope.EXITS_WRITE,
        Scope.APPROVALS_REQUEST,
        Scope.HEDGE_WRITE,
        Scope.BACKTESTS_WRITE,
        Scope.MODELS_READ,
    },
    Role.RISK: _READ_ALL
    | {
        Scope.RISK_WRITE,
        Scope.EXITS_WRITE,
        Scope.HEDGE_WRITE,
        Scope.KILL_SWITCH_WRITE,
        Scope.APPROVALS_REQUEST,
        Scope.AUDIT_READ,
    },
    Role.DIRECTOR: _READ_ALL
    | {
        Scope.BACKTESTS_WRITE,
        Scope.APPROVALS_READ,
        Scope.APPROVALS_WRITE,
        Scope.APPROVALS_REQUEST,
        Scope.APPROVAL_POLICIES_WRITE,
        Scope.HEDGE_WRITE,
        Scope.KILL_SWITCH_WRITE,
        Scope.KEYS_READ,
        Scope.KEYS_WRITE,
        Scope.AUDIT_READ,
    },
    Role.ADMIN: _READ_ALL
    | {
        Scope.ACCOUNTS_WRITE,
        Scope.FUNDS_WRITE,
        Scope.KEYS_READ,
        Scope.KEYS_WRITE,
        Scope.USERS_READ,
        Scope.USERS_WRITE,
        Scope.APPROVALS_READ,
        Scope.APPROVALS_REQUEST,
        Scope.APPROVAL_POLICIES_WRITE,
        Scope.AUDIT_READ,
    },
    Role.AUDITOR: _READ_ALL | {Scope.AUDIT_READ, Scope.APPROVALS_READ},
    Role.SERVICE: frozenset(),
}


def parse_role(name: str) -> Role:
    """Return the `Role` named `name` (exact, lower case); raise UnknownRole otherwise."""
    try:
        return Role(name)
    except ValueError:
        raise UnknownRole(name) from None


def parse_roles(names: Iterable[str]) -> frozenset[Role]:
    """Parse every name with `parse_role`."""
    return frozenset(parse_role(name) for name in names)


def is_valid_scope(scope: str) -> bool:
    """True when `scope` has the `<resource>:<action>` shape (known or not)."""
    return bool(SCOPE_PATTERN.fullmatch(scope))


def default_scopes(roles: Iterable[Role]) -> frozenset[str]:
    """The union of `DEFAULT_SCOPES` for `roles`."""
    granted: set[str] = set()
    for role in roles:
        granted |= DEFAULT_SCOPES[role]
    return frozenset(str(scope) for scope in granted)
