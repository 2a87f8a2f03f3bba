"""Authentication and authorisation: EdDSA bearer tokens, roles and scopes (FastAPI dependencies in `.dependencies`)."""

from shared.auth.keys import InvalidKey, key_fingerprint, load_private_key, load_public_key, write_key_pair
from shared.auth.roles import DEFAULT_SCOPES, Role, Scope, UnknownRole, default_scopes, parse_role, parse_roles
from shared.auth.tokens import (
    ALL_ACCOUNTS,
    InvalidToken,
    Principal,
    RevocationUnavailable,
    TokenIssuer,
    TokenRejection,
    TokenVerifier,
)

__all__ = [
    "ALL_ACCOUNTS",
    "DEFAULT_SCOPES",
    "InvalidKey",
    "InvalidToken",
    "Principal",
    "RevocationUnavailable",
    "Role",
    "Scope",
    "TokenIssuer",
    "TokenRejection",
    "TokenVerifier",
    "UnknownRole",
    "default_scopes",
    "key_fingerprint",
    "load_private_key",
    "load_public_key",
    "parse_role",
    "parse_roles",
    "write_key_pair",
]
