"""HTTP routes of the accounts service (thin: auth, parse, call the service, return)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Response, status

from services.accounts.adapters import Adapters
from services.accounts.auth import AuthService
from services.accounts.client_address import ClientAddress
from services.accounts.repository import Row, Visibility
from services.accounts.schemas import (
    AccountCreate,
    AccountRead,
    CredentialsPut,
    CredentialsRead,
    GrantCreate,
    LoginRequest,
    LogoutRequest,
    RefreshRequest,
    RolesUpdate,
    ServiceIdentityCreate,
    ServiceIdentityCreated,
    ServiceTokenRequest,
    TokenResponse,
    TotpCodeRequest,
    TotpEnrollment,
    TotpEnrollRequest,
    UserCreate,
    UserRead,
)
from services.accounts.service import AccountsService
from services.accounts.sessions import IssuedTokens, SessionService
from shared.auth.dependencies import CurrentPrincipal, EnrollingPrincipal, ensure_account_access
from shared.auth.tokens import ALL_ACCOUNTS, Principal
from shared.errors import COMMON_RESPONSES
from shared.service_kit import info_router
from shared.web import (
    AccountAdmin,
    AccountIdPath,
    AccountReader,
    KeyReader,
    KeyWriter,
    UserAdmin,
    UserIdPath,
    UserReader,
    error_responses,
)


def get_accounts_service(adapters: Adapters) -> AccountsService:
    return adapters.accounts


def get_auth_service(adapters: Adapters) -> AuthService:
    return adapters.auth


def get_session_service(adapters: Adapters) -> SessionService:
    return adapters.sessions


Accounts = Annotated[AccountsService, Depends(get_accounts_service)]
Auth = Annotated[AuthService, Depends(get_auth_service)]
Sessions = Annotated[SessionService, Depends(get_session_service)]

router = APIRouter(responses=COMMON_RESPONSES)
# Bodies of the credential routes are a few hundred bytes; anything bigger is refused before it is parsed.
CREDENTIAL_BODY_LIMIT_BYTES = 4_096
CREDENTIAL_ROUTES = (
    "/auth/login",
    "/auth/refresh",
    "/auth/logout",
    "/auth/step-up",
    "/auth/totp/enroll",
    "/auth/totp/confirm",
    "/auth/service-token",
)
BODY_LIMITS = dict.fromkeys(CREDENTIAL_ROUTES, CREDENTIAL_BODY_LIMIT_BYTES)
router.include_router(info_router("accounts"))


def visibility_of(principal: Principal) -> Visibility:
    """All accounts for a `*` token, otherwise the user's grants intersected with the token's accounts."""
    if ALL_ACCOUNTS in principal.accounts:
        return Visibility.everything()
    return Visibility.granted_to(principal.subject, sorted(principal.accounts))


def _tokens(issued: IssuedTokens) -> TokenResponse:
    return TokenResponse(
        access_token=issued.access_token, refresh_token=issued.refresh_token, expires_in=issued.expires_in
    )


# auth ---------------------------------------------------------------------------------------------------------


@router.post("/auth/login", response_model=TokenResponse, tags=["auth"], responses=error_responses(401, 403, 429, 503))
async def login(body: LoginRequest, client: ClientAddress, auth: Auth) -> TokenResponse:
    """Password (+ `totp_code` when enrolled) -> short-lived access token and a refresh token."""
    return _tokens(await auth.login(body.username, body.password, body.totp_code, client))


@router.post("/auth/refresh", response_model=TokenResponse, tags=["auth"], responses=error_responses(401, 429, 503))
async def refresh(body: RefreshRequest, client: ClientAddress, sessions: Sessions) -> TokenResponse:
    """Rotate the refresh token; presenting a spent one revokes the whole session."""
    return _tokens(await sessions.refresh(body.refresh_token, client))


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT, tags=["auth"], responses=error_responses(401))
async def logout(principal: CurrentPrincipal, sessions: Sessions, body: LogoutRequest | None = None) -> Response:
    """Revoke this access token and its session (the given refresh token's, else the one that issued this token)."""
    await sessions.logout(principal, body.refresh_token if body else None)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/step-up", response_model=TokenResponse, tags=["auth"], responses=error_responses(401, 409, 429, 503)
)
async def step_up(
    body: TotpCodeRequest, principal: CurrentPrincipal, client: ClientAddress, auth: Auth
) -> TokenResponse:
    """A fresh access token with amr ["otp", "pwd"] and auth_time now (directors need it to approve)."""
    return _tokens(await auth.step_up(principal, body.totp_code, client))


@router.post(
    "/auth/totp/enroll",
    response_model=TotpEnrollment,
    tags=["auth"],
    responses=error_responses(401, 404, 409, 429, 503),
)
async def totp_enroll(
    body: TotpEnrollRequest, principal: EnrollingPrincipal, client: ClientAddress, auth: Auth
) -> TotpEnrollment:
    """Start TOTP enrollment (the password again): the provisioning URI (otpauth://) is shown this once."""
    return TotpEnrollment(provisioning_uri=await auth.totp_enroll(principal, body.password, client))


@router.post(
    "/auth/totp/confirm",
    status_code=status.HTTP_204_NO_CONTENT,
    tags=["auth"],
    responses=error_responses(401, 409, 429),
)
async def totp_confirm(
    body: TotpCodeRequest, principal: EnrollingPrincipal, client: ClientAddress, auth: Auth
) -> Response:
    """Finish enrollment with a current code; from now on login needs a code."""
    await auth.totp_confirm(principal, body.totp_code, client)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/service-token", response_model=TokenResponse, tags=["auth"], responses=error_responses(401, 429, 503)
)
async def service_token(body: ServiceTokenRequest, client: ClientAddress, auth: Auth) -> TokenResponse:
    """Client-credentials grant for service identities."""
    return _tokens(await auth.service_token(body.client_id, body.client_secret, client))


# users and grants -------------------------------------------------------------------------------------------


def _user(row: Row, accounts: list[str]) -> UserRead:
    return UserRead(
        user_id=row["user_id"],
        username=row["username"],
        roles=list(row["roles"]),
        status=row["status"],
        totp_enabled=row.get("totp_confirmed_at") is not None,
        accounts=accounts,
        created_at=row["created_at"],
    )


@router.post("/users", response_model=UserRead, status_code=201, tags=["users"], responses=error_responses(409))
async def create_user(body: UserCreate, principal: UserAdmin, accounts: Accounts) -> UserRead:
    """Create a user (password rules in docs/accounts.md)."""
    return _user(await accounts.create_user(principal.subject, body), [])


@router.get("/users", response_model=list[UserRead], tags=["users"])
async def list_users(principal: UserReader, accounts: Accounts) -> list[UserRead]:
    """Every user with their grants."""
    return [_user(row, granted) for row, granted in await accounts.list_users()]


@router.get("/users/{user_id}", response_model=UserRead, tags=["users"], responses=error_responses(404))
async def get_user(user_id: UserIdPath, principal: UserReader, accounts: Accounts) -> UserRead:
    """One user."""
    return _user(*await accounts.user(user_id))


@router.put("/users/{user_id}/roles", response_model=UserRead, tags=["users"], responses=error_responses(404))
async def set_roles(user_id: UserIdPath, body: RolesUpdate, principal: UserAdmin, accounts: Accounts) -> UserRead:
    """Replace the user's roles (unknown roles are 422)."""
    await accounts.set_roles(principal.subject, user_id, [role.value for role in body.roles], body.reason)
    return _user(*await accounts.user(user_id))


@router.post("/users/{user_id}/grants", response_model=UserRead, tags=["users"], responses=error_responses(404))
async def add_grant(user_id: UserIdPath, body: GrantCreate, principal: UserAdmin, accounts: Accounts) -> UserRead:
    """Grant an account to the user (takes effect at their next login or refresh)."""
    await accounts.grant(principal.subject, user_id, body.account_id, body.reason)
    return _user(*await accounts.user(user_id))


@router.delete(
    "/users/{user_id}/grants/{account_id}", response_model=UserRead, tags=["users"], responses=error_responses(404)
)
async def revoke_grant(
    user_id: UserIdPath, account_id: AccountIdPath, principal: UserAdmin, accounts: Accounts
) -> UserRead:
    """Remove a grant."""
    await accounts.revoke_grant(principal.subject, user_id, account_id)
    return _user(*await accounts.user(user_id))


@router.post("/service-identities", response_model=ServiceIdentityCreated, status_code=201, tags=["users"])
async def create_service_identity(
    body: ServiceIdentityCreate, principal: UserAdmin, accounts: Accounts
) -> ServiceIdentityCreated:
    """A service identity; the client secret is shown this once."""
    client_id, secret = await accounts.create_service_identity(principal.subject, body)
    return ServiceIdentityCreated(client_id=client_id, client_secret=secret, name=body.name)


# trading accounts and credentials ---------------------------------------------------------------------------


def _account(row: Row) -> AccountRead:
    return AccountRead.model_validate({name: row[name] for name in AccountRead.model_fields})


@router.post(
    "/accounts", response_model=AccountRead, status_code=201, tags=["accounts"], responses=error_responses(404, 409)
)
async def create_account(body: AccountCreate, principal: AccountAdmin, accounts: Accounts) -> AccountRead:
    """Create a trading account (company or director) on a venue."""
    return _account(await accounts.create_account(principal.subject, body))


@router.get("/accounts", response_model=list[AccountRead], tags=["accounts"])
async def list_accounts(principal: AccountReader, accounts: Accounts) -> list[AccountRead]:
    """Accounts you may see (your grants; every account for admin, risk and auditor tokens)."""
    return [_account(row) for row in await accounts.list_accounts(visibility_of(principal))]


@router.get("/accounts/{account_id}", response_model=AccountRead, tags=["accounts"], responses=error_responses(404))
async def get_account(account_id: AccountIdPath, principal: AccountReader, accounts: Accounts) -> AccountRead:
    """One account (404 when it is not yours)."""
    return _account(await accounts.account(account_id, visibility_of(principal)))


def _credentials(row: Row) -> CredentialsRead:
    return CredentialsRead.model_validate({name: row[name] for name in CredentialsRead.model_fields})


@router.put(
    "/accounts/{account_id}/credentials",
    response_model=CredentialsRead,
    tags=["accounts"],
    responses=error_responses(404),
)
async def put_credentials(
    account_id: AccountIdPath, body: CredentialsPut, principal: KeyWriter, accounts: Accounts
) -> CredentialsRead:
    """Store or replace the exchange API key pair (encrypted; the secret is never returned)."""
    ensure_account_access(principal, account_id)
    return _credentials(await accounts.put_credentials(principal.subject, account_id, body, visibility_of(principal)))


@router.get(
    "/accounts/{account_id}/credentials",
    response_model=CredentialsRead,
    tags=["accounts"],
    responses=error_responses(404),
)
async def get_credentials(account_id: AccountIdPath, principal: KeyReader, accounts: Accounts) -> CredentialsRead:
    """Key id, fingerprint and times of the stored credentials (never the key or secret)."""
    ensure_account_access(principal, account_id)
    return _credentials(await accounts.credentials(account_id, visibility_of(principal)))
