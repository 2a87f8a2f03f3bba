"""Login, refresh-token rotation with reuse detection, logout, TOTP enrollment and step-up.

Failures never say whether the user exists or which factor was wrong: an unknown username is verified against a
dummy argon2 hash, and a wrong password, a missing, wrong or replayed TOTP code all answer the same 401
`invalid_credentials` "invalid username, password or code". Failed attempts are counted in Redis per (name,
client), per client and per name (ratelimit.py); over a limit the answer is 429 with Retry-After. Argon2 runs in
worker threads with a bounded queue (passwords.PasswordWorkers). A TOTP time step is accepted once per user
(`users.totp_last_step`, claimed atomically), for login, step-up and enrollment alike.
"""

from __future__ import annotations

import hmac
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
import pyotp
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.accounts.config import AccountsSettings
from services.accounts.errors import (
    InvalidCredentials,
    InvalidRefreshToken,
    InvalidTotp,
    SigningKeyMissing,
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
from services.accounts.tokens import OTP, PASSWORD, UserClaims, new_refresh_token, refresh_token_hash
from shared.audit import JsonValue
from shared.audit import append as audit_append
from shared.auth.revocation import revoke_jti
from shared.auth.roles import Role, Scope
from shared.auth.tokens import Principal, TokenIssuer
from shared.clock import utc_now
from shared.crypto import KeyProvider, decrypt_secret, encrypt_secret
from shared.crypto.store import totp_row_id
from shared.db import UnitOfWork
from shared.observability.logging import get_logger

log = get_logger(__name__)
ENROLL_SCOPE = Scope.TOTP_ENROLL
TOTP_WINDOW = 1  # one 30-second step either side, for clock drift
BAD_LOGIN = "invalid username, password or code"
SERVICE_SCOPE = "service"  # the limiter's namespace for service-identity credentials


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str | None = None


@dataclass
class AuthService:
    """Token-issuing use cases; `issuer` is None when the signing key is not configured (login answers 503)."""

    settings: AccountsSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    keys: KeyProvider
    issuer: TokenIssuer | None
    limiter: LoginLimiter
    accounts: AccountsService
    passwords: PasswordWorkers
    clock: Callable[[], datetime] = utc_now
    # The time TOTP codes are checked against (tests step it forward instead of waiting 30 s).
    totp_clock: Callable[[], datetime] = utc_now

    def _issuer(self) -> TokenIssuer:
        if self.issuer is None:
            raise SigningKeyMissing("AETHER_JWT_PRIVATE_KEY is not configured: this service cannot sign tokens")
        return self.issuer

    def _access(self, claims: UserClaims, jti_sink: list[str] | None = None) -> tuple[str, int]:
        ttl = self.settings.jwt_ttl_s
        token = self._issuer().issue(
            claims.user_id,
            claims.roles,
            scopes=claims.scopes,
            grants=claims.grants,
            ttl_s=ttl,
            now=self.clock(),
            amr=claims.amr,
            auth_time=claims.auth_time,
        )
        if jti_sink is not None:
            jti_sink.append(self._issuer_jti(token))
        return token, ttl

    def _issuer_jti(self, token: str) -> str:
        # The token was just signed here: reading its own claims back needs no verification.
        jti: str = jwt.decode(token, options={"verify_signature": False})["jti"]
        return jti

    async def _new_refresh(self, session: AsyncSession, claims: UserClaims, family_id: str, access_jti: str) -> str:
        token = new_refresh_token()
        now = self.clock()
        await AccountsRepository(session).insert_refresh_token(
            {
                "token_hash": refresh_token_hash(token),
                "family_id": family_id,
                "user_id": claims.user_id,
                "access_jti": access_jti,
                "amr": list(claims.amr),
                "auth_time": claims.auth_time,
                "created_at": now,
                "expires_at": now + timedelta(seconds=self.settings.refresh_ttl_s),
            }
        )
        return token

    async def _session_tokens(self, session: AsyncSession, claims: UserClaims, family_id: str) -> IssuedTokens:
        jtis: list[str] = []
        access, ttl = self._access(claims, jtis)
        refresh = await self._new_refresh(session, claims, family_id, jtis[0])
        return IssuedTokens(access, ttl, refresh)

    # login ------------------------------------------------------------------------------------------------

    async def login(self, username: str, password: str, totp_code: str | None, client_ip: str) -> IssuedTokens:
        """Password (+ TOTP when enrolled) -> access and refresh token; see the module docstring for failures."""
        self._issuer()
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
        if totp_code is None or not await self._accept_totp(user, totp_code):
            await self._fail(name, client_ip, "invalid_totp")
            raise InvalidCredentials(BAD_LOGIN)
        return [PASSWORD, OTP]

    def _enrollment_token(self, user_id: str) -> str:
        now = self.clock()
        return self._issuer().issue(
            user_id,
            [],
            scopes=[ENROLL_SCOPE],
            ttl_s=self.settings.enrollment_ttl_s,
            now=now,
            amr=[PASSWORD],
            auth_time=now,
        )

    def _totp(self, user: Row) -> pyotp.TOTP:
        secret = decrypt_secret(self.keys, user["totp_secret"], totp_row_id(user["user_id"]))
        return pyotp.TOTP(secret.decode("ascii"))

    def _matching_step(self, user: Row, code: str) -> int | None:
        """The time step (within the drift window) whose code is `code`, or None."""
        if user["totp_secret"] is None:
            return None
        totp, now = self._totp(user), self.totp_clock()
        for offset in range(-TOTP_WINDOW, TOTP_WINDOW + 1):
            moment = now + timedelta(seconds=offset * totp.interval)
            if hmac.compare_digest(totp.at(moment), code):
                return int(totp.timecode(moment))
        return None

    async def _accept_totp(self, user: Row, code: str, session: AsyncSession | None = None) -> bool:
        """True when `code` matches a step newer than every step accepted before; that step is then spent."""
        step = self._matching_step(user, code)
        if step is None:
            return False
        if session is not None:
            return await AccountsRepository(session).claim_totp_step(user["user_id"], step)
        async with UnitOfWork(self.sessionmaker) as uow:
            return await AccountsRepository(uow.session).claim_totp_step(user["user_id"], step)

    async def _open_session(self, user: Row, amr: list[str], name: str, client_ip: str) -> IssuedTokens:
        await self.limiter.reset(name, client_ip)
        async with UnitOfWork(self.sessionmaker) as uow:
            granted = await AccountsRepository(uow.session).granted_accounts(user["user_id"])
            claims = UserClaims.of(user["user_id"], user["roles"], granted, amr, self.clock())
            tokens = await self._session_tokens(uow.session, claims, uuid.uuid4().hex)
            await audit_append(
                uow.session,
                actor=user["user_id"],
                action="auth.login",
                target=user["user_id"],
                details={"amr": amr},
                chain=AUDIT_CHAIN,
            )
        return tokens

    # refresh / logout -------------------------------------------------------------------------------------

    async def refresh(self, token: str, client_ip: str) -> IssuedTokens:
        """Rotate: the presented token is spent, a new pair is issued; a spent token presented again revokes its family."""
        self._issuer()
        await self.limiter.check_client(client_ip)
        reused: Row | None = None
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            row = await repo.lock_refresh_token(refresh_token_hash(token))
            if row is None or row["expires_at"] <= self.clock():
                await self.limiter.record_client_failure(client_ip)
                raise InvalidRefreshToken("refresh token is invalid or expired")
            if row["rotated_at"] is not None or row["revoked_at"] is not None:
                reused = row
            else:
                tokens = await self._rotate(uow.session, repo, row)
        if reused is not None:
            await self._revoke_family(reused, reason="refresh_token_reuse")
            raise InvalidRefreshToken("refresh token was already used or revoked; the session is revoked")
        return tokens

    async def _rotate(self, session: AsyncSession, repo: AccountsRepository, row: Row) -> IssuedTokens:
        user = await repo.user(row["user_id"])
        if user is None or user["status"] != "active":
            raise InvalidRefreshToken("refresh token is invalid or expired")
        await repo.mark_rotated(row["token_hash"], self.clock())
        granted = await repo.granted_accounts(row["user_id"])
        claims = UserClaims.of(row["user_id"], user["roles"], granted, row["amr"], row["auth_time"])
        return await self._session_tokens(session, claims, row["family_id"])

    async def _revoke_family(self, row: Row, reason: str) -> None:
        """Revoke every refresh token of the family and every access token they issued (audited)."""
        await self._revoke_families(row["user_id"], [row["family_id"]], reason)
        # Rotated tokens of the family were already marked, so also revoke the access token of the presented one.
        lifetime = timedelta(seconds=self.settings.jwt_ttl_s)
        await revoke_jti(self.redis, row["access_jti"], self.clock() + lifetime)

    async def _revoke_families(self, user_id: str, family_ids: list[str], reason: str) -> None:
        revoked: list[Row] = []
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            for family_id in family_ids:
                tokens = await repo.revoke_family(family_id, self.clock())
                revoked.extend(tokens)
                details: dict[str, JsonValue] = {"family_id": family_id, "reason": reason, "tokens": len(tokens)}
                await audit_append(
                    uow.session,
                    actor=user_id,
                    action="auth.session_revoked",
                    target=user_id,
                    details=details,
                    chain=AUDIT_CHAIN,
                )
        lifetime = timedelta(seconds=self.settings.jwt_ttl_s)
        for item in revoked:
            await revoke_jti(self.redis, item["access_jti"], item["created_at"] + lifetime)

    async def logout(self, principal: Principal, refresh_token: str | None) -> None:
        """Revoke the access token and its session: the refresh token's family when given, else the token's own.

        Without a refresh token, the family whose login or refresh issued this access token is revoked; an access
        token that no refresh token came with (a step-up token) revokes every session of the user.
        """
        await revoke_jti(self.redis, principal.token_id, principal.expires_at)
        if refresh_token is not None:
            async with UnitOfWork(self.sessionmaker) as uow:
                row = await AccountsRepository(uow.session).lock_refresh_token(refresh_token_hash(refresh_token))
            if row is not None and row["user_id"] == principal.subject:
                await self._revoke_family(row, reason="logout")
                return
        async with UnitOfWork(self.sessionmaker) as uow:
            repo = AccountsRepository(uow.session)
            family = await repo.family_of_access_token(principal.subject, principal.token_id)
            families = [family] if family is not None else await repo.live_families(principal.subject)
        if families:
            await self._revoke_families(principal.subject, families, reason="logout")

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
            if await self._accept_totp(user, code, uow.session):
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
        if not await self._accept_totp(user, code):
            await self._fail(user["username"], client_ip, "invalid_totp")
            raise InvalidTotp("totp_code: the code does not match or was used already")
        claims = UserClaims.of(user["user_id"], user["roles"], granted, [PASSWORD, OTP], self.clock())
        access, ttl = self._access(claims)
        return IssuedTokens(access, ttl)

    # service identities -----------------------------------------------------------------------------------

    async def service_token(self, client_id: str, client_secret: str, client_ip: str) -> IssuedTokens:
        """Client-credentials grant: a `service` token with the identity's scopes and accounts."""
        self._issuer()
        await self.limiter.check(client_id, client_ip, SERVICE_SCOPE)
        try:
            row = await self.accounts.service_identity(client_id)
        except UnknownServiceIdentity:
            await self.passwords.verify(None, client_secret)  # same cost as a wrong secret
            await self._fail(client_id, client_ip, "invalid_client", SERVICE_SCOPE)
            raise
        if not await self.passwords.verify(row["secret_hash"], client_secret):
            await self._fail(client_id, client_ip, "invalid_client", SERVICE_SCOPE)
            raise UnknownServiceIdentity("invalid client credentials")
        await self.limiter.reset(client_id, client_ip, SERVICE_SCOPE)
        ttl = self.settings.jwt_ttl_s
        token = self._issuer().issue(
            client_id, [Role.SERVICE], scopes=row["scopes"], accounts=row["accounts"], ttl_s=ttl, now=self.clock()
        )
        return IssuedTokens(token, ttl)
