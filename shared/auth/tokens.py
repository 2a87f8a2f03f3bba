"""Bearer tokens: EdDSA (Ed25519) JWTs with a short TTL, `aud`/`iss` checked, roles, scopes and per-role grants.

Accounts are granted per role (claim `grants`: role -> account ids or `"*"`): a route that admits the caller
under some of its roles checks accounts against those roles' grants only (`Principal.acting_as`), so an
auditor's read-everything never widens the same user's operator grants.

The verifier pins the algorithm list to `["EdDSA"]` and holds an Ed25519 public key object, so `alg: none`,
HS256 keyed with the public PEM (algorithm confusion) and RSA/ECDSA tokens are all refused before any
signature maths. Failures raise `InvalidToken(reason)` with a short, fixed reason and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import jwt

from shared.auth.keys import key_fingerprint, load_private_key, load_public_key
from shared.auth.roles import Role, Scope, UnknownRole, is_valid_scope, parse_role, parse_roles

ALGORITHM = "EdDSA"
ALL_ACCOUNTS = "*"
REQUIRED_CLAIMS = ("iss", "aud", "sub", "iat", "exp", "jti")
MAX_TOKEN_LENGTH = 8_192

RevocationCheck = Callable[[str], Awaitable[bool]]


class TokenRejection(StrEnum):
    MALFORMED = "malformed token"
    DISALLOWED_ALGORITHM = "algorithm not allowed"
    BAD_SIGNATURE = "signature verification failed"
    EXPIRED = "token expired"
    NOT_YET_VALID = "token not yet valid"
    WRONG_AUDIENCE = "wrong audience"
    WRONG_ISSUER = "wrong issuer"
    MISSING_CLAIM = "missing required claim"
    BAD_CLAIM = "invalid claim"
    UNKNOWN_ROLE = "unknown role"
    REVOKED = "token revoked"
    INVALID = "invalid token"


class InvalidToken(Exception):
    """The token is not acceptable; `reason` is short and safe to return to the caller."""

    def __init__(self, reason: TokenRejection) -> None:
        super().__init__(str(reason))
        self.reason = reason


class RevocationUnavailable(Exception):
    """The revocation check could not answer; the token is refused (fail closed) and the caller should answer 503."""


Grants = Mapping[Role, frozenset[str]]


def freeze_grants(grants: Mapping[Role, Iterable[str]]) -> Grants:
    """A read-only copy of `grants` (role -> account ids)."""
    return MappingProxyType({role: frozenset(accounts) for role, accounts in grants.items()})


@dataclass(frozen=True, slots=True)
class Principal:
    """The authenticated caller, as the verified token describes it."""

    subject: str
    roles: frozenset[Role]
    scopes: frozenset[str]
    # Role -> the accounts granted under that role (`"*"`: every account); a role absent here is granted none.
    grants: Grants
    token_id: str
    expires_at: datetime
    # How the subject authenticated (RFC 8176 values: "pwd", "otp") and when; empty/None for service tokens.
    amr: frozenset[str] = frozenset()
    auth_time: datetime | None = None

    def has_any_role(self, *roles: Role) -> bool:
        """True when the principal holds at least one of `roles` (no implicit hierarchy)."""
        return not self.roles.isdisjoint(roles)

    def has_scopes(self, *scopes: str) -> bool:
        """True when the principal holds every one of `scopes`."""
        return self.scopes.issuperset(scopes)

    @property
    def accounts(self) -> frozenset[str]:
        """The accounts granted under the roles this principal holds (narrowed by `acting_as`)."""
        granted: set[str] = set()
        for role in self.roles:
            granted |= self.grants.get(role, frozenset())
        return frozenset(granted)

    def can_access_account(self, account_id: str) -> bool:
        """True when a role held grants `account_id`, or all accounts (`"*"`)."""
        accounts = self.accounts
        return ALL_ACCOUNTS in accounts or account_id in accounts

    def acting_as(self, roles: Iterable[Role]) -> Principal:
        """This principal with only those of its roles in `roles` (and their grants): what a route admitted."""
        kept = self.roles.intersection(roles)
        return replace(self, roles=kept, grants=freeze_grants({role: self.grants.get(role, ()) for role in kept}))

    @property
    def is_enrollment(self) -> bool:
        """True for the TOTP enrollment token: it reaches `/auth/totp/*` and nothing else."""
        return Scope.TOTP_ENROLL in self.scopes


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _string_list(values: Iterable[str], what: str) -> list[str]:
    items = sorted({str(value) for value in values})
    if any(not item for item in items):
        raise ValueError(f"empty {what} value")
    return items


class TokenIssuer:
    """Signs tokens with an Ed25519 private key; the header carries `kid` = the key's RFC 7638 thumbprint."""

    def __init__(self, private_key_pem: bytes | str, issuer: str, audience: str) -> None:
        self._key = load_private_key(private_key_pem)
        self.issuer = issuer
        self.audience = audience
        self.key_id = key_fingerprint(self._key.public_key())

    def issue(
        self,
        subject: str,
        roles: Iterable[Role | str],
        scopes: Iterable[str] = (),
        accounts: Iterable[str] = (),
        ttl_s: int = 900,
        now: datetime | None = None,
        amr: Iterable[str] = (),
        auth_time: datetime | None = None,
        grants: Mapping[Role, Iterable[str]] | None = None,
    ) -> str:
        """Sign a token for `subject` valid `ttl_s` seconds from `now` (tz-aware; default: the current time).

        `grants` maps each role to its accounts; without it every role gets `accounts` (one-role tokens, tools).
        """
        if not subject:
            raise ValueError("subject must not be empty")
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        issued_at = now or _utc_now()
        if issued_at.tzinfo is None:
            raise ValueError("now must be timezone-aware")
        parsed = parse_roles(str(role) for role in roles)
        role_names = sorted(str(role) for role in parsed)
        account_list = list(accounts)
        per_role = grants if grants is not None else dict.fromkeys(parsed, account_list)
        if not set(per_role) <= parsed:
            raise ValueError("grants name a role the token does not carry")
        scope_names = _string_list(scopes, "scope")
        bad_scopes = [scope for scope in scope_names if not is_valid_scope(scope)]
        if bad_scopes:
            raise ValueError(f"scope must look like resource:action, got {bad_scopes[0]!r}")
        iat = int(issued_at.timestamp())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": iat,
            "nbf": iat,
            "exp": iat + ttl_s,
            "jti": uuid.uuid4().hex,
            "roles": role_names,
            "scopes": scope_names,
            "grants": {str(role): _string_list(per_role[role], "account") for role in sorted(per_role)},
        }
        methods = _string_list(amr, "amr")
        if methods:
            claims["amr"] = methods
        if auth_time is not None:
            claims["auth_time"] = int(auth_time.timestamp())
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id, "typ": "JWT"})


# Most specific first: InvalidSignatureError is a DecodeError, so it must be matched before it.
_REJECTIONS: tuple[tuple[type[jwt.PyJWTError], TokenRejection], ...] = (
    (jwt.InvalidAlgorithmError, TokenRejection.DISALLOWED_ALGORITHM),
    (jwt.InvalidSignatureError, TokenRejection.BAD_SIGNATURE),
    (jwt.ExpiredSignatureError, TokenRejection.EXPIRED),
    (jwt.ImmatureSignatureError, TokenRejection.NOT_YET_VALID),
    (jwt.InvalidAudienceError, TokenRejection.WRONG_AUDIENCE),
    (jwt.InvalidIssuerError, TokenRejection.WRONG_ISSUER),
    (jwt.MissingRequiredClaimError, TokenRejection.MISSING_CLAIM),
    (jwt.InvalidIssuedAtError, TokenRejection.BAD_CLAIM),
    (jwt.DecodeError, TokenRejection.MALFORMED),
)


def _rejection_for(exc: jwt.PyJWTError) -> TokenRejection:
    for error_type, rejection in _REJECTIONS:
        if isinstance(exc, error_type):
            return rejection
    return TokenRejection.INVALID


def _claim_strings(payload: Mapping[str, Any], name: str, *, required: bool) -> list[str]:
    value = payload.get(name)
    if value is None:
        if required:
            raise InvalidToken(TokenRejection.MISSING_CLAIM)
        return []
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise InvalidToken(TokenRejection.BAD_CLAIM)
    return value


def _principal_from(payload: Mapping[str, Any]) -> Principal:
    subject, token_id, exp = payload["sub"], payload["jti"], payload["exp"]
    if not (isinstance(subject, str) and subject and isinstance(token_id, str) and token_id):
        raise InvalidToken(TokenRejection.BAD_CLAIM)
    try:
        roles = frozenset(parse_role(name) for name in _claim_strings(payload, "roles", required=True))
    except UnknownRole:
        raise InvalidToken(TokenRejection.UNKNOWN_ROLE) from None
    return Principal(
        subject=subject,
        roles=roles,
        scopes=frozenset(_claim_strings(payload, "scopes", required=False)),
        grants=_grants(payload.get("grants"), roles),
        token_id=token_id,
        expires_at=datetime.fromtimestamp(exp, tz=UTC),
        amr=frozenset(_claim_strings(payload, "amr", required=False)),
        auth_time=_auth_time(payload.get("auth_time")),
    )


def _grants(value: object, roles: frozenset[Role]) -> Grants:
    # Absent means no account at all (fail closed); granting a role the token does not carry is refused.
    if value is None:
        return freeze_grants({})
    if not isinstance(value, dict):
        raise InvalidToken(TokenRejection.BAD_CLAIM)
    grants: dict[Role, list[str]] = {}
    for name in value:
        try:
            role = parse_role(name)
        except UnknownRole:
            raise InvalidToken(TokenRejection.UNKNOWN_ROLE) from None
        if role not in roles:
            raise InvalidToken(TokenRejection.BAD_CLAIM)
        grants[role] = _claim_strings(value, name, required=True)
    return freeze_grants(grants)


def _auth_time(value: object) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidToken(TokenRejection.BAD_CLAIM)
    return datetime.fromtimestamp(value, tz=UTC)


# Where a request's ASGI scope state keeps the token its rate limiter verified, for the auth dependency to reuse.
VERIFIED_TOKEN_STATE = "aether.verified_token"  # noqa: S105 - a state key, not a secret


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature and claims one request already checked, and with which key, issuer and audience."""

    token: str
    principal: Principal
    verifier_id: tuple[str, str, str]


class TokenVerifier:
    """Verifies tokens from one issuer for one audience with an Ed25519 public key; optional async revocation hook."""

    def __init__(
        self,
        public_key_pem: bytes | str,
        issuer: str,
        audience: str,
        leeway_s: float = 10,
        is_revoked: RevocationCheck | None = None,
    ) -> None:
        self._key = load_public_key(public_key_pem)
        self._public_key_pem = public_key_pem
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        self.is_revoked = is_revoked
        self.key_id = key_fingerprint(self._key)

    def with_revocation(self, is_revoked: RevocationCheck) -> TokenVerifier:
        """A verifier like this one that also consults `is_revoked(jti)`."""
        return TokenVerifier(self._public_key_pem, self.issuer, self.audience, self.leeway_s, is_revoked)

    @property
    def identity(self) -> tuple[str, str, str]:
        """What a verification depends on besides the token: the key, the issuer and the audience."""
        return (self.key_id, self.issuer, self.audience)

    def verify_once(self, token: str, state: MutableMapping[str, Any]) -> Principal:
        """`verify_without_revocation`, remembered in a request's `state`: the same token checked again by a
        verifier of the same key, issuer and audience in that request reuses the answer."""
        earlier = state.get(VERIFIED_TOKEN_STATE)
        if isinstance(earlier, VerifiedToken) and earlier.token == token and earlier.verifier_id == self.identity:
            return earlier.principal
        principal = self.verify_without_revocation(token)
        state[VERIFIED_TOKEN_STATE] = VerifiedToken(token, principal, self.identity)
        return principal

    def verify_without_revocation(self, token: str) -> Principal:
        """Check signature, algorithm, header and claims; does NOT consult the revocation hook (use `verify`)."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken(TokenRejection.MALFORMED)
        try:
            decoded = jwt.decode_complete(
                token,
                self._key,
                algorithms=[ALGORITHM],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(_rejection_for(exc)) from None
        typ = decoded["header"].get("typ")
        if typ is not None and typ != "JWT":
            raise InvalidToken(TokenRejection.MALFORMED)
        return _principal_from(decoded["payload"])

    async def verify(self, token: str, state: MutableMapping[str, Any] | None = None) -> Principal:
        """Full verification: `verify_without_revocation` (`verify_once` given the request's `state`), then the
        revocation hook (fails closed), consulted on every call."""
        principal = self.verify_without_revocation(token) if state is None else self.verify_once(token, state)
        if self.is_revoked is None:
            return principal
        try:
            revoked = await self.is_revoked(principal.token_id)
        except Exception as exc:
            raise RevocationUnavailable(type(exc).__name__) from exc
        if revoked:
            raise InvalidToken(TokenRejection.REVOKED)
        return principal
