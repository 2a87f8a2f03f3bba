"""FastAPI dependencies: the bearer principal, role and scope checks, per-account access.

Role checks are explicit: `require_roles(Role.OPERATOR)` admits operators only; a route that admins may
also call lists `Role.ADMIN` too. No role implies another. `authorize(roles, scope)` is what routes use (through
the aliases in shared/web.py): the caller needs one of the roles AND the scope, and the handler gets the
principal narrowed to the admitted roles, so account checks see only those roles' grants.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth.roles import Role, Scope
from shared.auth.tokens import InvalidToken, Principal, RevocationUnavailable, TokenVerifier

REALM = "aether"

bearer_scheme = HTTPBearer(
    auto_error=False, bearerFormat="JWT", description="EdDSA-signed JWT (Authorization: Bearer <token>)"
)


class Unauthorized(HTTPException):
    """401: no usable bearer token; the body never says more than a short reason."""

    def __init__(self, message: str, *, token_present: bool = True) -> None:
        # RFC 6750 section 3.1: no error code when the request carried no credentials at all.
        challenge = f'Bearer realm="{REALM}", error="invalid_token"' if token_present else f'Bearer realm="{REALM}"'
        super().__init__(
            status_code=401,
            detail={"code": "unauthorized", "message": message},
            headers={"WWW-Authenticate": challenge},
        )


class Forbidden(HTTPException):
    """403: a valid token without the role, scope or account the route needs."""

    def __init__(self, message: str, *, missing_scopes: tuple[str, ...] = ()) -> None:
        headers = None
        code = "insufficient_scope" if missing_scopes else "forbidden"
        if missing_scopes:
            scope = " ".join(missing_scopes)
            headers = {"WWW-Authenticate": f'Bearer realm="{REALM}", error="insufficient_scope", scope="{scope}"'}
        super().__init__(status_code=403, detail={"code": code, "message": message}, headers=headers)


class AuthUnavailable(HTTPException):
    """503: the revocation check could not answer, so the token cannot be trusted right now."""

    def __init__(self) -> None:
        super().__init__(
            status_code=503,
            detail={"code": "auth_unavailable", "message": "token revocation check unavailable"},
            headers={"Retry-After": "1"},
        )


def _verifier(request: Request) -> TokenVerifier:
    verifier = getattr(request.app.state, "token_verifier", None)
    if not isinstance(verifier, TokenVerifier):
        raise RuntimeError("app.state.token_verifier is not set: the app factory must install a TokenVerifier")
    return verifier


async def get_enrolling_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
) -> Principal:
    """The verified caller, enrollment tokens included: for `/auth/totp/*` only (401 on a bad token)."""
    verifier = _verifier(request)
    if credentials is None:
        raise Unauthorized("missing bearer token", token_present=False)
    try:
        # The rate limiter may have checked this token already: its signature is verified once per request.
        principal = await verifier.verify(credentials.credentials, request.scope.setdefault("state", {}))
    except InvalidToken as exc:
        raise Unauthorized(str(exc.reason)) from None
    except RevocationUnavailable:
        raise AuthUnavailable() from None
    request.state.principal = principal
    return principal


async def get_principal(principal: Annotated[Principal, Depends(get_enrolling_principal)]) -> Principal:
    """The verified caller of this request (401 when the bearer token is missing or invalid; 403 for an
    enrollment token, which reaches `/auth/totp/*` only)."""
    if principal.is_enrollment:
        raise Forbidden("an enrollment token is good for /auth/totp/* only")
    return principal


CurrentPrincipal = Annotated[Principal, Depends(get_principal)]
EnrollingPrincipal = Annotated[Principal, Depends(get_enrolling_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency: the principal if it holds at least one of `roles`, else 403."""
    if not roles:
        raise ValueError("require_roles needs at least one role")
    wanted = frozenset(roles)

    async def check_roles(principal: CurrentPrincipal) -> Principal:
        if not principal.has_any_role(*wanted):
            raise Forbidden(f"requires role: {' or '.join(sorted(wanted))}")
        return principal

    return check_roles


def require_scopes(*scopes: str) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency: the principal if it holds every one of `scopes`, else 403."""
    if not scopes:
        raise ValueError("require_scopes needs at least one scope")
    wanted = tuple(sorted(set(scopes)))

    async def check_scopes(principal: CurrentPrincipal) -> Principal:
        missing = tuple(scope for scope in wanted if scope not in principal.scopes)
        if missing:
            raise Forbidden(f"requires scope: {' '.join(missing)}", missing_scopes=missing)
        return principal

    return check_scopes


def authorize(roles: Iterable[Role], scope: Scope) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency: the principal narrowed to `roles` (`Principal.acting_as`) if it holds one of them and `scope`,
    else 403 (`insufficient_scope` in WWW-Authenticate for a missing scope)."""
    wanted = frozenset(roles)
    if not wanted:
        raise ValueError("authorize needs at least one role")

    async def check_role_and_scope(principal: CurrentPrincipal) -> Principal:
        if not principal.has_any_role(*wanted):
            raise Forbidden(f"requires role: {' or '.join(sorted(wanted))}")
        if scope not in principal.scopes:
            raise Forbidden(f"requires scope: {scope}", missing_scopes=(str(scope),))
        return principal.acting_as(wanted)

    return check_role_and_scope


def principal_can_access_account(principal: Principal, account_id: str) -> bool:
    """True when the principal's token grants `account_id` (or all accounts with `"*"`)."""
    return principal.can_access_account(account_id)


def ensure_account_access(principal: Principal, account_id: str) -> None:
    """Raise Forbidden unless the principal may act on `account_id`."""
    if not principal.can_access_account(account_id):
        raise Forbidden("account not granted to this principal")
