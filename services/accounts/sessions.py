"""User sessions: access tokens, refresh-token families, rotation with reuse detection, revocation and logout.

A login opens a family (`SessionService.open`); each refresh spends the presented refresh token and issues a new
pair in the same family. A spent or revoked refresh token presented again revokes its whole family: every refresh
token of it and every access token they issued (their jti go to the Redis revocation list), audited as
`auth.session_revoked`. Refresh failures count against the client only (a refresh token carries no name).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import jwt
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.accounts.config import AccountsSettings
from services.accounts.errors import InvalidRefreshToken, SigningKeyMissing
from services.accounts.ratelimit import LoginLimiter
from services.accounts.repository import AccountsRepository, Row
from services.accounts.service import AUDIT_CHAIN
from services.accounts.tokens import UserClaims, new_refresh_token, refresh_token_hash
from shared.audit import JsonValue
from shared.audit import append as audit_append
from shared.auth.revocation import revoke_jti
from shared.auth.tokens import Principal, TokenIssuer
from shared.clock import utc_now
from shared.db import UnitOfWork


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_in: int
    refresh_token: str | None = None


@dataclass
class SessionService:
    """Issues and ends sessions; `issuer` is None when the signing key is not configured (refresh answers 503)."""

    settings: AccountsSettings
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: Redis
    issuer: TokenIssuer | None
    limiter: LoginLimiter
    clock: Callable[[], datetime] = utc_now

    def signer(self) -> TokenIssuer:
        """The token issuer, or SigningKeyMissing (503) when the signing key is not configured."""
        if self.issuer is None:
            raise SigningKeyMissing("AETHER_JWT_PRIVATE_KEY is not configured: this service cannot sign tokens")
        return self.issuer

    def access(self, claims: UserClaims, jti_sink: list[str] | None = None) -> tuple[str, int]:
        """A signed access token for `claims` and its lifetime; its jti is appended to `jti_sink` when given."""
        ttl = self.settings.jwt_ttl_s
        token = self.signer().issue(
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

    async def open(self, session: AsyncSession, claims: UserClaims, family_id: str) -> IssuedTokens:
        """An access token and a refresh token of `family_id` (stored in `session`'s transaction)."""
        jtis: list[str] = []
        access, ttl = self.access(claims, jtis)
        refresh = await self._new_refresh(session, claims, family_id, jtis[0])
        return IssuedTokens(access, ttl, refresh)

    # refresh ----------------------------------------------------------------------------------------------

    async def refresh(self, token: str, client_ip: str) -> IssuedTokens:
        """Rotate: the presented token is spent, a new pair is issued; a spent token presented again revokes its family."""
        self.signer()
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
        return await self.open(session, claims, row["family_id"])

    # revocation and logout --------------------------------------------------------------------------------

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
