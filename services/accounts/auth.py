"""Login, TOTP enrollment and step-up, service-identity tokens.

Failures never say whether the user exists or which factor was wrong: an unknown username is verified against a
dummy argon2 hash, and a wrong password, a missing, wrong or replayed TOTP code all answer the same 401
`invalid_credentials` "invalid username, password or code". Failed attempts are counted in Redis per (name,
client), per client and per name (ratelimit.py); over a limit the answer is 429 with Retry-After. Argon2 runs in
worker threads with a bounded queue (passwords.PasswordWorkers). A TOTP time step is accepted once per user
(totp.TotpVerifier), for login, step-up and enrollment alike. Sessions (the tokens a login opens, refresh-token
rotation with reuse detection, revocation and logout) live in sessions.py.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pyotp
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.accounts.config import AccountsSettings
from services.accounts.errors import (
    InvalidCredentials,
    InvalidTotp,
    TotpAlreadyConfirmed,
    TotpEnrollmentRequired,
    TotpNotEnrolled,
    UnknownServiceIdentity,
    UserNotFound,
)
from services.accounts.passwords import PasswordWorkers
from services.accounts.ratelimit import LoginLimiter
from services.accounts.repository import AccountsRepository, Row
from services.accounts.service import AUDIT_CHAIN, AccountsService
from services.accounts.sessions import IssuedTokens, SessionService
from services.accounts.tokens import OTP, PASSWORD, UserClaims
from services.accounts.totp import TotpVerifier
from shared.audit import append as audit_append
from shared.auth.roles import Role, Scope
from shared.auth.tokens import Principal
from shared.clock import utc_now
from shared.crypto import KeyProvider, encrypt_secret
from shared.crypto.store import totp_row_id
from shared.db import UnitOfWork
from shared.observability.logging import get_logger

log = get_logger(__name__)
ENROLL_SCOPE = Scope.TOTP_ENROLL
BAD_LOGIN = "invalid username, password or code"
SERVICE_SCOPE = "service"  # the limiter's namespace for service-identity credentials


@dataclass
class AuthService:
    """Credential-checking use cases; tokens are signed through `sessions` (login answers 503 without a signing key)."""

    settings: AccountsSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    keys: KeyProvider
    limiter: LoginLimiter
    accounts: AccountsService
    passwords: PasswordWorkers
    sessions: SessionService
    totp: TotpVerifier
    clock: Callable[[], datetime] = utc_now

    # login ------------------------------------------------------------------------------------------------

    async def login(self, username: str, password: str, totp_code: str | None, client_ip: str) -> IssuedTokens:
        """Password (+ TOTP when enrolled) -> access and refresh token; see the module docstring for failures."""
        self.sessions.signer()
        # A flood is refused here (503), before it costs a Redis or database round trip.
        with self.passwords.admitted():
            return await self._login(username.lower(), password, totp_code, client_ip)

    async def _login(self, name: str, password: str, totp_code: str | None, client_ip: str) -> IssuedTokens:
        await self.limiter.check(name, client_ip)
        async with UnitOfWork(self.sessionmaker) as uow:
            user = await AccountsRepository(uow.session).user_by_username(name)
        password_ok = await self.passwords.check(user["password_hash"] if user else None, password)
        if user is None or not password_ok or user["status"] != "active":
            await self._fail(name, client_ip, "invalid_credentials")
            raise InvalidCredentials(BAD_LOGIN)
        amr = await self._second_factor(user, totp_code, name, client_ip)
        return await self._open_session(user, amr, name, client_ip)

    async def _fail(self, username: str, client_ip: str, reason: str, scope: str = "user") -> None:
        await self.limiter.record_failure(username, client_ip, scope)
        log.info("login_failed", reason=reason, client_ip=client_ip)

    async def _second_factor(self, user: Row, totp_code: str | None, name: str, client_ip: str) -> list[str]:
        if user["totp_confirmed_at"] is None:
            if Role.DIRECTOR.value in user["roles"]:
                raise TotpEnrollmentRequired(
                    "directors must enroll TOTP before they can sign in: use the enrollment token with "
                    "POST /auth/totp/enroll then POST /auth/totp/confirm",
                    details={
                        "enrollment_token": self._enrollment_token(user["user_id"]),
                        "expires_in": self.settings.enrollment_ttl_s,
                    },
                )
            return [PASSWORD]
        # A missing code answers like a wrong password: otherwise the answer would confirm the password.
        if totp_code is None or not await self.totp.accept(user, totp_code):
            await self._fail(name, client_ip, "invalid_totp")
            raise InvalidCredentials(BAD_LOGIN)
        return [PASSWORD, OTP]

    def _enrollment_token(self, user_id: str) -> str:
        now = self.clock()
        return self.sessions.signer().issue(
            user_id,
            [],
            scopes=[ENROLL_SCOPE],
            ttl_s=self.settings.enrollment_ttl_s,
            now=now,
            amr=[PASSWORD],
            auth_time=now,
        )

    async def _open_session(self, user: Row, amr: list[str], name: str, client_ip: str) -> IssuedTokens:
        await self.limiter.reset(name, client_ip)
        async with UnitOfWork(self.sessionmaker) as uow:
            granted = await AccountsRepository(uow.session).granted_accounts(user["user_id"])
            claims = UserClaims.of(user["user_id"], user["roles"], granted, amr, self.clock())
            tokens = await self.sessions.open(uow.session, claims, uuid.uuid4().hex)
            await audit_append(
                uow.session,
                actor=user["user_id"],
                action="auth.login",
                target=user["user_id"],
                details={"amr": amr},
                chain=AUDIT_CHAIN,
            )
        return tokens

    # TOTP and step-up -------------------------------------------------------------------------------------

    async def totp_enroll(self, principal: Principal, password: str, client_ip: str) -> str:
        """A new TOTP secret (encrypted at rest) after the password is re-checked; the URI is returned this once."""
        await self._recheck_password(principal, password, client_ip)
        secret = pyotp.random_base32()
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            user = await self._user_for_update(repo, principal)
            if user["totp_confirmed_at"] is not None:
                raise TotpAlreadyConfirmed("TOTP is already confirmed for this user")
            blob = encrypt_secret(self.keys, secret.encode("ascii"), totp_row_id(user["user_id"]))
            await repo.update_user(user["user_id"], self.clock(), totp_secret=blob)
            await audit_append(
                uow.session,
                actor=user["user_id"],
                action="totp.enrolled",
                target=user["user_id"],
                details={},
                chain=AUDIT_CHAIN,
            )
        return pyotp.TOTP(secret).provisioning_uri(name=user["username"], issuer_name=self.settings.totp_issuer)

    async def _recheck_password(self, principal: Principal, password: str, client_ip: str) -> None:
        """Binding a second factor needs the password, not only a (possibly stolen) access token."""
        async with UnitOfWork(self.sessionmaker) as uow:
            user = await AccountsRepository(uow.session).user(principal.subject)
        if user is None or user["status"] != "active":
            raise UserNotFound("the token's subject is not an active user")
        await self.limiter.check(user["username"], client_ip)
        if not await self.passwords.verify(user["password_hash"], password):
            await self._fail(user["username"], client_ip, "invalid_password")
            raise InvalidCredentials("password: does not match")

    async def totp_confirm(self, principal: Principal, code: str, client_ip: str) -> None:
        """Confirm enrollment with a current code (a wrong one counts toward the lockout)."""
        async with UnitOfWork(self.sessionmaker) as uow:
            pending = await AccountsRepository(uow.session).user(principal.subject)
        if pending is not None:
            await self.limiter.check(pending["username"], client_ip)
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            user = await self._user_for_update(repo, principal)
            if user["totp_secret"] is None:
                raise TotpNotEnrolled("enroll first: POST /auth/totp/enroll")
            if user["totp_confirmed_at"] is not None:
                raise TotpAlreadyConfirmed("TOTP is already confirmed for this user")
            if await self.totp.accept(user, code, uow.session):
                await repo.update_user(user["user_id"], self.clock(), totp_confirmed_at=self.clock())
                await audit_append(
                    uow.session,
                    actor=user["user_id"],
                    action="totp.confirmed",
                    target=user["user_id"],
                    details={},
                    chain=AUDIT_CHAIN,
                )
                return
        await self._fail(user["username"], client_ip, "invalid_totp")
        raise InvalidTotp("totp_code: the code does not match")

    async def _user_for_update(self, repo: AccountsRepository, principal: Principal) -> Row:
        user = await repo.user(principal.subject, for_update=True)
        if user is None or user["status"] != "active":
            raise UserNotFound("the token's subject is not an active user")
        return user

    async def step_up(self, principal: Principal, code: str, client_ip: str) -> IssuedTokens:
        """A fresh access token with amr pwd+otp and auth_time=now after a valid TOTP code."""
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            user = await repo.user(principal.subject)
            granted = await repo.granted_accounts(principal.subject)
        if user is None or user["status"] != "active":
            raise UserNotFound("the token's subject is not an active user")
        await self.limiter.check(user["username"], client_ip)
        if user["totp_confirmed_at"] is None:
            raise TotpNotEnrolled("step-up needs a confirmed TOTP enrollment")
        if not await self.totp.accept(user, code):
            await self._fail(user["username"], client_ip, "invalid_totp")
            raise InvalidTotp("totp_code: the code does not match or was used already")
        claims = UserClaims.of(user["user_id"], user["roles"], granted, [PASSWORD, OTP], self.clock())
        access, ttl = self.sessions.access(claims)
        return IssuedTokens(access, ttl)

    # service identities -----------------------------------------------------------------------------------

    async def service_token(self, client_id: str, client_secret: str, client_ip: str) -> IssuedTokens:
        """Client-credentials grant: a short-lived `service` token with the identity's scopes and accounts. Every
        issuance and every refusal is audited (chain `accounts`)."""
        self.sessions.signer()
        await self.limiter.check(client_id, client_ip, SERVICE_SCOPE)
        try:
            row = await self.accounts.service_identity(client_id)
        except UnknownServiceIdentity:
            await self.passwords.verify(None, client_secret)  # same cost as a wrong secret
            await self._refuse_service(client_id, client_ip, "unknown_client")
            raise
        if not await self.passwords.verify(row["secret_hash"], client_secret):
            await self._refuse_service(client_id, client_ip, "wrong_secret")
            raise UnknownServiceIdentity("invalid client credentials")
        await self.limiter.reset(client_id, client_ip, SERVICE_SCOPE)
        ttl = self.settings.service_token_ttl_s
        token = self.sessions.signer().issue(
            client_id, [Role.SERVICE], scopes=row["scopes"], accounts=row["accounts"], ttl_s=ttl, now=self.clock()
        )
        async with UnitOfWork(self.sessionmaker) as uow:
            await audit_append(
                uow.session,
                actor=client_id,
                action="service_token.issued",
                target=client_id,
                details={"scopes": list(row["scopes"]), "ttl_s": ttl, "client_ip": client_ip},
                chain=AUDIT_CHAIN,
            )
        return IssuedTokens(token, ttl)

    async def _refuse_service(self, client_id: str, client_ip: str, reason: str) -> None:
        await self._fail(client_id, client_ip, "invalid_client", SERVICE_SCOPE)
        async with UnitOfWork(self.sessionmaker) as uow:
            await audit_append(
                uow.session,
                actor="anonymous",
                action="service_token.refused",
                target=client_id,
                details={"reason": reason, "client_ip": client_ip},
                chain=AUDIT_CHAIN,
            )
